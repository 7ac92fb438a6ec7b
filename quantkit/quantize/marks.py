"""What a quantized GGUF says of how it was made: a budget mix (its budget and tensor-type counts, the
`quantize.mix.*` keys quantkit writes) and its importance matrix (quantkit's `quantize.mix.imatrix`, or
`quantize.imatrix.file` as llama-quantize writes it). A ladder type quantkit made with an imatrix carries no
such key (libllama's quantizer writes none): its file cannot say so, the job's records do."""
from __future__ import annotations

from ..gguf.header import GGUFHeader
from ..gguf.reader import file_type_name
from .mixes import KEY_IMATRIX, KEY_TARGET, KEY_TYPES

LLAMA_IMATRIX_FILE = "quantize.imatrix.file"  # llama-quantize's key (llama.cpp's LLM_KV_QUANTIZE_IMATRIX_FILE)


def file_marks(header: GGUFHeader) -> dict:
    """`{"file_type", "mix": {"target", "types"} or None, "imatrix": name or None}` of a parsed header."""
    target = header.get(KEY_TARGET)
    mix = {"target": str(target), "types": str(header.get(KEY_TYPES) or "")} if target else None
    imatrix = header.get(KEY_IMATRIX) or header.get(LLAMA_IMATRIX_FILE)
    return {"file_type": file_type_name(header.get("general.file_type")), "mix": mix,
            "imatrix": str(imatrix) if imatrix else None}
