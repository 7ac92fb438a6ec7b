"""Small GGUF files written with the gguf package, for the bad-input tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter


def write_tiny_gguf(path: Path, arch: str = "llama", n_embd: int = 8) -> Path:
    w = GGUFWriter(path, arch)
    w.add_block_count(1)
    w.add_embedding_length(n_embd)
    w.add_head_count(2)
    w.add_tensor("token_embd.weight", np.ones((4, n_embd), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
