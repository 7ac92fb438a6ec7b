"""quantkit: DeepSeek-R1-Distill from Hugging Face to a running local model through GGUF and llama.cpp."""
from .errors import QuantkitError
from .inspect import GGUFInfo, inspect_gguf

__version__ = "0.1.0"

__all__ = ["QuantkitError", "GGUFInfo", "inspect_gguf", "__version__"]
