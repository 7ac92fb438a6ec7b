# The two commands a newcomer needs: `make demo` and `make test`. Both create the environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
QK := $(VENV)/bin/quantkit

.PHONY: setup setup-test demo test clean

# pip keeps the llama-cpp-python wheel it builds (about 10 minutes on 2 cores) in its wheel cache,
# so a second environment, or a second run, does not build it again.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

setup: $(VENV)/.runtime
setup-test: $(VENV)/.test

# the demo's environment has the plot extra, so that the report ends with its picture
$(VENV)/.demo: $(VENV)/.runtime
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[plot]'
	touch $@

demo: $(VENV)/.demo
	$(QK) run smollm2

test: setup-test
	$(PY) -m pytest

clean:
	rm -rf $(VENV) out .pytest_cache
