"""The `general.*` keys of a converted GGUF (name, basename, size label, base model, license, sampling defaults
…): gathered by gguf's own `Metadata` from the model card, config.json and generation_config.json, as
llama.cpp's converter does, then completed with what quantkit knows about the model."""
from __future__ import annotations

from pathlib import Path

from gguf import GGML_QUANT_VERSION, GGUFType, GGUFWriter, LlamaFileType, Metadata, size_label


def write_metadata(writer: GGUFWriter, folder: Path, name: str | None, ftype: LlamaFileType) -> None:
    """Add the general.* keys; call after every tensor has been announced to `writer` (for the size label)."""
    total, shared, expert, expert_count = writer.get_total_parameter_count()
    meta = Metadata.load(None, folder, name, total)
    if meta.name is None:
        meta.name = name or folder.name
    if meta.size_label is None and total > 0:
        meta.size_label = size_label(total, shared, expert, expert_count)
    writer.add_type(GGUFType.MODEL)
    meta.set_gguf_meta_model(writer)
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(GGML_QUANT_VERSION)


def write_hparams(writer: GGUFWriter, config: dict, arch: str) -> None:
    """The architecture keys llama.cpp reads (`<arch>.block_count`, … `<arch>.rope.freq_base`)."""
    from ..models import ConfigShape
    from .tensors import rope_theta

    hp = ConfigShape.of(config)
    writer.add_block_count(hp.n_layer)
    if (n_ctx := config.get("max_position_embeddings")) is not None:
        writer.add_context_length(int(n_ctx))
    writer.add_embedding_length(hp.n_embd)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_head_kv)
    if (theta := rope_theta(config)) is not None:
        writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    if config.get("head_dim") is not None:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    if arch == "llama":
        writer.add_vocab_size(hp.n_vocab)
        writer.add_rope_dimension_count(hp.head_dim)
