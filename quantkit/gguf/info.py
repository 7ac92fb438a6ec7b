"""`inspect`: what a GGUF file holds, as data."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path

from . import reader as gguf_file
from .header import tensor_bytes


@dataclass
class TensorEntry:
    name: str
    type: str
    shape: list[int]
    n_elements: int
    n_bytes: int


@dataclass
class TypeTotal:
    type: str
    count: int
    n_elements: int
    n_bytes: int


@dataclass
class GGUFInfo:
    path: str
    file_size: int
    gguf_version: int
    architecture: str
    name: str | None
    size_label: str | None
    n_params: int
    file_type: str | None
    bits_per_weight: float
    context_length: int | None
    n_layer: int | None
    n_embd: int | None
    n_ff: int | None
    n_head: int | None
    n_head_kv: int | None
    head_dim: int | None
    vocab_size: int | None
    tokenizer_model: str | None
    tokenizer_pre: str | None
    has_chat_template: bool
    n_tensors: int
    tensor_types: list[TypeTotal]
    tensors: list[TensorEntry] = dc_field(default_factory=list)
    n_shards: int = 1  # files of a split model (file_size is their total)

    def to_dict(self) -> dict:
        return asdict(self)


def inspect_gguf(path: str | Path) -> GGUFInfo:
    """Read the header of a GGUF file (no tensor data is touched) and summarise it."""
    path = Path(path)
    header = gguf_file.read_header(path)
    tensors = [
        TensorEntry(t.name, t.type.name, list(t.shape), t.n_elements, tensor_bytes(t.type, t.shape))
        for t in header.tensors
    ]
    n_params = sum(t.n_elements for t in tensors)
    n_bytes = sum(t.n_bytes for t in tensors)
    n_head = header.arch("attention.head_count")
    n_embd = header.arch("embedding_length")
    head_dim = header.arch("attention.key_length") or (n_embd // n_head if n_embd and n_head else None)
    return GGUFInfo(
        path=str(path),
        file_size=header.file_size or 0,
        n_shards=int(header.get("split.count", 0) or 1),
        gguf_version=header.version,
        architecture=header.get("general.architecture", "unknown"),
        name=header.get("general.name"),
        size_label=header.get("general.size_label"),
        n_params=n_params,
        file_type=gguf_file.file_type_name(header.get("general.file_type")),
        bits_per_weight=round(8 * n_bytes / n_params, 4) if n_params else 0.0,
        context_length=header.arch("context_length"),
        n_layer=header.arch("block_count"),
        n_embd=n_embd,
        n_ff=header.arch("feed_forward_length"),
        n_head=n_head,
        n_head_kv=header.arch("attention.head_count_kv", n_head),
        head_dim=head_dim,
        vocab_size=header.arch("vocab_size") or header.arrays.get("tokenizer.ggml.tokens"),
        tokenizer_model=header.get("tokenizer.ggml.model"),
        tokenizer_pre=header.get("tokenizer.ggml.pre"),
        has_chat_template="tokenizer.chat_template" in header.kv,
        n_tensors=len(tensors),
        tensor_types=_histogram(tensors),
        tensors=tensors,
    )


def _histogram(tensors: list[TensorEntry]) -> list[TypeTotal]:
    totals: dict[str, TypeTotal] = {}
    for t in tensors:
        total = totals.setdefault(t.type, TypeTotal(t.type, 0, 0, 0))
        total.count += 1
        total.n_elements += t.n_elements
        total.n_bytes += t.n_bytes
    return sorted(totals.values(), key=lambda x: -x.n_bytes)
