"""`inspect`: what a GGUF file holds, as data."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path

from . import gguf_file
from .gguf_file import arch_field, field


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

    def to_dict(self) -> dict:
        return asdict(self)


def inspect_gguf(path: str | Path) -> GGUFInfo:
    """Read the header of a GGUF file (no tensor data is touched) and summarise it."""
    path = Path(path)
    reader = gguf_file.open_gguf(path)
    tensors = [
        TensorEntry(t.name, t.tensor_type.name, [int(d) for d in t.shape], int(t.n_elements), int(t.n_bytes))
        for t in reader.tensors
    ]
    n_params = sum(t.n_elements for t in tensors)
    n_bytes = sum(t.n_bytes for t in tensors)
    n_head = arch_field(reader, "attention.head_count")
    n_embd = arch_field(reader, "embedding_length")
    head_dim = arch_field(reader, "attention.key_length") or (n_embd // n_head if n_embd and n_head else None)
    tokens = reader.get_field("tokenizer.ggml.tokens")
    return GGUFInfo(
        path=str(path),
        file_size=path.stat().st_size,
        gguf_version=int(field(reader, "GGUF.version", 0)),
        architecture=field(reader, "general.architecture", "unknown"),
        name=field(reader, "general.name"),
        size_label=field(reader, "general.size_label"),
        n_params=n_params,
        file_type=gguf_file.file_type_name(field(reader, "general.file_type")),
        bits_per_weight=round(8 * n_bytes / n_params, 4) if n_params else 0.0,
        context_length=arch_field(reader, "context_length"),
        n_layer=arch_field(reader, "block_count"),
        n_embd=n_embd,
        n_ff=arch_field(reader, "feed_forward_length"),
        n_head=n_head,
        n_head_kv=arch_field(reader, "attention.head_count_kv", n_head),
        head_dim=head_dim,
        vocab_size=arch_field(reader, "vocab_size") or (len(tokens.data) if tokens else None),
        tokenizer_model=field(reader, "tokenizer.ggml.model"),
        tokenizer_pre=field(reader, "tokenizer.ggml.pre"),
        has_chat_template=reader.get_field("tokenizer.chat_template") is not None,
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
