"""GGUF → Hugging Face checkpoint: safetensors weights, config.json, generation_config.json, tokenizer files.

The reverse of llama.cpp's convert_hf_to_gguf.py for the llama and qwen2 architectures. Weights are
dequantized with the gguf package and streamed a block of rows at a time, so memory stays near one block
whatever the model's size; the folder appears only when complete.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import MODEL_TENSOR, TENSOR_NAMES

from ...errors import InvalidArgumentError, OutputError, UnsupportedModelError
from ...files import WriteProgress, atomic_dir, check_free_space, output_dir, remove_stale_partials
from ...gguf.reader import field as gguf_field
from ...gguf.reader import open_gguf, tensor_array
from ...models import CONVERTIBLE, architecture_named
from .config import generation_config, hf_config, read_hparams, rope_scaling
from .safetensors import (DEFAULT_MAX_SHARD_BYTES, DTYPES, INDEX_FILE, SafetensorsEntry, index_json, plan_shards,
                          shard_names, write_shard)
from .tensors import iter_rows, plan_hf_tensors
from .tokenizer import read_gguf_vocab, tokenizer_config, tokenizer_json

__all__ = ["ExportResult", "export_gguf"]

log = logging.getLogger(__name__)



@dataclass
class ExportResult:
    out_dir: Path
    architecture: str
    dtype: str
    n_tensors: int
    total_bytes: int  # of the safetensors data
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0


def export_gguf(
    path: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "bf16",
    force: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: WriteProgress | None = None,
) -> ExportResult:
    """Write the GGUF at `path` as a Hugging Face checkpoint in `out_dir` (weights in `dtype`: f32, f16 or bf16).

    An existing non-empty `out_dir` is replaced only with `force`."""
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if max_shard_bytes < 1:
        raise InvalidArgumentError("the maximum shard size must be positive")
    started = time.monotonic()
    reader = open_gguf(path)
    name = gguf_field(reader, "general.architecture")
    arch = architecture_named(name)
    if arch is None or not arch.convertible:
        raise UnsupportedModelError(f"cannot export architecture {name!r}: supported architectures are "
                                    f"{', '.join(a.name for a in CONVERTIBLE)}")
    hp = read_hparams(reader, arch)
    vocab = read_gguf_vocab(reader)
    plans = plan_hf_tensors(reader, arch, hp)
    by_name = {p.hf_name: p for p in plans}
    rope_name = TENSOR_NAMES[MODEL_TENSOR.ROPE_FREQS] + ".weight"
    rope_freqs = tensor_array(reader, rope_name) if any(t.name == rope_name for t in reader.tensors) else None
    embed = next((p for p in plans if p.hf_name.endswith("embed_tokens.weight")), None)
    if embed is None:
        raise UnsupportedModelError("the GGUF has no token embedding tensor")
    config = hf_config(
        arch, hp, vocab,
        vocab_size=embed.shape[0],
        tied="lm_head.weight" not in by_name,
        attention_bias=any(name.endswith("_proj.bias") and ".self_attn." in name for name in by_name),
        rope=rope_scaling(hp, rope_freqs),
        dtype=dtype,
    )

    entries = [SafetensorsEntry(p.hf_name, p.shape, DTYPES[dtype]) for p in plans]
    shards = plan_shards(entries, max_shard_bytes)
    names = shard_names(len(shards))
    total = sum(e.n_bytes for e in entries)

    out_dir = Path(out_dir)
    _check_destination(out_dir, force)

    files: list[str] = []
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total, "export")

    log.info("exporting %s (%s, %d tensors) to %s as %s", path, arch.name, len(entries), out_dir, dtype)
    with output_dir(out_dir.parent) as parent, atomic_dir(out_dir, overwrite=True) as tmp:
        remove_stale_partials(parent, out_dir.name)  # what an export killed outright left behind
        check_free_space(tmp, total + (64 << 20))  # here, once the folder is known to be writable
        for shard, name in zip(shards, names):
            write_shard(tmp / name, shard, lambda e: iter_rows(by_name[e.name]), advance)
            files.append(name)
        if len(shards) > 1:
            files.append(_write_json(tmp / INDEX_FILE, index_json(shards, names)))
        files.append(_write_json(tmp / "config.json", config))
        files.append(_write_json(tmp / "generation_config.json", generation_config(vocab)))
        files.append(_write_json(tmp / "tokenizer.json", tokenizer_json(vocab), indent=None))
        files.append(_write_json(tmp / "tokenizer_config.json", tokenizer_config(vocab, hp["context_length"])))
    seconds = time.monotonic() - started
    log.info("exported %s in %.1f s", out_dir, seconds)
    return ExportResult(out_dir, arch.name, dtype, len(entries), total, files, seconds)


def _check_destination(out_dir: Path, force: bool) -> None:
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir():
            raise OutputError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not force:
            raise OutputError(f"{out_dir} already exists and is not empty",
                              hint="choose another folder, or pass --force to replace it")


def _write_json(path: Path, data: Any, indent: int | None = 2) -> str:
    # json's fast C encoder only runs without indent: tokenizer.json, with 100k+ merges, is written compact
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    return path.name

