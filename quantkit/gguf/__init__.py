"""GGUF files: the header parser, the reader every GGUF read goes through (any shard of a split model gives the
whole model), llama.cpp's split format, and `inspect`."""
