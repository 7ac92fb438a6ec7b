"""quantkit: DeepSeek-R1-Distill from Hugging Face to a running local model through GGUF and llama.cpp.

The library under the CLI. Each command has its function:
    from quantkit.convert import convert          # checkpoint → GGUF → quant ladder
    from quantkit.quantize import quantize        # one quant type through libllama
    from quantkit.perplexity import perplexity    # llama-perplexity's numbers, KL-divergence
    from quantkit.bench import bench              # pp/tg tokens/s like llama-bench
and the names below, importable from `quantkit` itself.
"""
from .chat import ChatSession
from .errors import QuantkitError
from .export import export_gguf
from .inspect import GGUFInfo, inspect_gguf
from .job import run_recipe
from .memory import auto_gpu_layers, estimate_memory
from .reasoning import ReasoningSplitter, split_reasoning
from .recipes import load_recipe

__version__ = "0.1.0"

__all__ = [
    "ChatSession", "GGUFInfo", "QuantkitError", "ReasoningSplitter", "__version__", "auto_gpu_layers",
    "estimate_memory", "export_gguf", "inspect_gguf", "load_recipe", "run_recipe", "split_reasoning",
]
