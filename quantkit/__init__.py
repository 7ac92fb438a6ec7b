"""quantkit: DeepSeek-R1-Distill from Hugging Face to a running local model through GGUF and llama.cpp.

The library under the CLI. Each command has its function:
    from quantkit.convert import convert          # checkpoint → GGUF → quant ladder
    from quantkit.quantize import quantize        # one quant type through libllama
    from quantkit.perplexity import perplexity    # llama-perplexity's numbers, KL-divergence
    from quantkit.imatrix import compute_imatrix  # llama-imatrix's importance matrix (imatrix_for_base: cached)
    from quantkit.bench import bench              # pp/tg tokens/s like llama-bench
    from quantkit.engine import Engine            # many sequences at once (chat, serve and eval run on it)
    from quantkit.eval.runner import evaluate     # pass@1 per rung, on the engine or an OpenAI endpoint
    from quantkit.serve import create_app         # the OpenAI-compatible server's FastAPI app
and the names below, importable from `quantkit` itself. They are imported on first use, so that a command
that needs neither llama.cpp nor pandas (convert, estimate-memory) does not pay for loading them.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ChatSession": "chat", "QuantkitError": "errors", "export_gguf": "export", "GGUFInfo": "inspect",
    "inspect_gguf": "inspect", "run_recipe": "job", "auto_gpu_layers": "memory", "estimate_memory": "memory",
    "ReasoningSplitter": "reasoning", "split_reasoning": "reasoning", "load_recipe": "recipes",
    "Engine": "engine", "GenerationRequest": "engine", "evaluate": "eval.runner", "create_app": "serve",
    "compute_imatrix": "imatrix", "imatrix_for_base": "imatrix",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'quantkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
