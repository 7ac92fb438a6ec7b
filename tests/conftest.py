from __future__ import annotations

import os
from pathlib import Path

import pytest

from reference.cache import test_cache

# Everything quantkit caches during tests goes to the test cache, never the user's.
os.environ.setdefault("QUANTKIT_CACHE", str(test_cache("quantkit-cache")))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from reference.smollm2 import smollm2_gguf as build

    return build()


@pytest.fixture(scope="session")
def llama_cpp_source() -> Path:
    from reference.sdist import llama_cpp_source as build

    return build()


@pytest.fixture(scope="session")
def scripted_gguf() -> Path:
    """The scripted R1 model (tests/_fixtures/scripted.py) whose template's generation prompt ends with `<think>\\n`."""
    from tests._fixtures.scripted import scripted_gguf as build

    return build("think")


@pytest.fixture(scope="session")
def scripted_bare_gguf() -> Path:
    """The scripted R1 model whose template's generation prompt ends with `<｜Assistant｜>`: chat adds `<think>\\n`."""
    from tests._fixtures.scripted import scripted_gguf as build

    return build("bare")


@pytest.fixture(scope="session")
def scripted_loop_gguf() -> Path:
    """The scripted R1 model whose thought never ends and repeats itself (tests/_fixtures/scripted.py, "loop")."""
    from tests._fixtures.scripted import scripted_gguf as build

    return build("loop")
