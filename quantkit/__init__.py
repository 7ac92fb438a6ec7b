"""quantkit: DeepSeek-R1-Distill from Hugging Face to a running local model through GGUF and llama.cpp.

The library under the CLI, one function per job:

    from quantkit.convert import convert         checkpoint → GGUF → quant ladder
    from quantkit.quantize.file import quantize  one quant type through libllama (ladder.py: many; mixes.py)
    estimate_memory(model, ...)                  what fits, before anything is loaded    (quantkit.memory)
    perplexity(paths, text)                      llama-perplexity's numbers, KLD         (quantkit.measure)
    bench(paths)                                 pp/tg tokens/s like llama-bench         (quantkit.measure)
    compute_imatrix(base, text)                  llama-imatrix's importance matrix       (quantkit.imatrix)
    Engine.open(path)                            the one place that generates            (quantkit.engine)
    ChatSession.open(path)                       a conversation on the engine            (quantkit.chat)
    create_app(config, load)                     the OpenAI-compatible server            (quantkit.serve)
    evaluate(models, task)                       pass@1 per rung                         (quantkit.eval)
    run_recipe(recipe)                           the whole job, resumable                (quantkit.job)

and the rest from `quantkit` itself (`convert` and `quantize` are also the names of their packages, so they
are imported from those). They are imported on first use, so that a command that needs neither llama.cpp nor pandas (convert,
estimate-memory) does not pay for loading them.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "estimate_memory": "memory", "auto_gpu_layers": "memory",
    "perplexity": "measure.perplexity", "bench": "measure.bench", "compute_imatrix": "imatrix",
    "imatrix_for_base": "imatrix", "Engine": "engine", "GenerationRequest": "engine", "ChatSession": "chat",
    "create_app": "serve", "evaluate": "eval.runner", "run_recipe": "job", "load_recipe": "job.recipes",
    "export_gguf": "convert.export", "GGUFInfo": "gguf.info", "inspect_gguf": "gguf.info",
    "ReasoningSplitter": "engine.reasoning", "split_reasoning": "engine.reasoning", "QuantkitError": "errors",
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
