"""A float GGUF to quantized files: libllama's quantizer (file.py), the ladder of named types (ladder.py) and the
budget mixes (mixes.py)."""
