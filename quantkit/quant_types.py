"""llama.cpp's quant types as data: the usual ladder, the base types, the file types of the `gguf` package, and
which of them libllama refuses to make without an importance matrix; and the one size grammar of every size flag."""
from __future__ import annotations

import re
from decimal import Decimal

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, LlamaFileType

from .errors import InvalidArgumentError

# The usual llama.cpp ladder, smallest first: the types that need no importance matrix.
LADDER: tuple[str, ...] = (
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M",
    "Q5_0", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0",
)
BASE_TYPES = ("F32", "F16", "BF16")
# The rungs an importance matrix opens (llama-quantize's IQ file types and Q2_K_S), smallest first.
IMATRIX_LADDER: tuple[str, ...] = (
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M",
    "IQ4_XS", "IQ4_NL",
)

# File types whose quantizer refuses to run without an importance matrix (llama-quant.cpp,
# tensor_requires_imatrix: the IQ1/IQ2 types, IQ3_XXS, and the Q2_K tensors of a Q2_K_S file).
_IMATRIX_TYPES = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S"})


def _all_file_types() -> dict[str, LlamaFileType]:
    names = {}
    for ft in LlamaFileType:
        if ft.name == "GUESSED":
            continue
        names[ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")] = ft
    return names


FILE_TYPES: dict[str, LlamaFileType] = _all_file_types()


def file_type(name: str) -> LlamaFileType:
    """`"Q4_K_M"` → `LlamaFileType.MOSTLY_Q4_K_M` (case-insensitive)."""
    key = name.strip().upper()
    try:
        return FILE_TYPES[key]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown quant type {name!r}",
            hint=f"use one of {', '.join((*LADDER, *BASE_TYPES))} (or another llama.cpp file type: "
                 f"{', '.join(n for n in FILE_TYPES if n not in LADDER and n not in BASE_TYPES)}), or 'all'",
        ) from None


def parse_types(values: list[str]) -> list[str]:
    """Repeatable, comma-separated type names in canonical spelling, without duplicates; "all" is the LADDER."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            names = LADDER if part.lower() == "all" else IMATRIX_LADDER if part.lower() == "all-imatrix" else (file_type(part).name.removeprefix("MOSTLY_").removeprefix("ALL_"),)
            out.extend(n for n in names if n not in out)
    if not out:
        raise InvalidArgumentError("no quant type given", hint=f"use one of {', '.join((*LADDER, *BASE_TYPES))}, or 'all'")
    return out


def is_imatrix_type(name: str) -> bool:
    """Whether this file type is one of the rungs an importance matrix opens (IMATRIX_LADDER)."""
    return name.strip().upper() in IMATRIX_LADDER


def needs_imatrix(name: str) -> bool:
    """Whether libllama refuses this file type without an importance matrix."""
    file_type(name)
    return name.strip().upper() in _IMATRIX_TYPES


# ---------------------------------------------------------------------------------------------------------------
# tensor types (ggml types) for per-tensor mixes

# The ggml types a budget mix may give a tensor, with gguf's block facts; the imatrix-only ones need importance
# values for the tensor (ggml_quantize_requires_imatrix: ggml aborts without them).
MIX_TYPES: tuple[T, ...] = (T.Q2_K, T.Q3_K, T.Q4_0, T.Q4_1, T.Q4_K, T.Q5_0, T.Q5_1, T.Q5_K, T.Q6_K, T.Q8_0, T.F16)
MIX_IMATRIX_TYPES: tuple[T, ...] = (T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ4_XS,
                                    T.IQ4_NL)
TENSOR_TYPES_NEEDING_IMATRIX = frozenset({T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS})


def block_size(t: T) -> int:
    return GGML_QUANT_SIZES[t][0]


def bits_per_weight(t: T) -> float:
    block, size = GGML_QUANT_SIZES[t]
    return 8 * size / block


def tensor_type(name: str) -> T:
    """`"q4_k"` → GGMLQuantizationType.Q4_K."""
    try:
        return T[name.strip().upper()]
    except KeyError:
        raise InvalidArgumentError(f"unknown tensor type {name!r}",
                                   hint=f"use one of {', '.join(t.name for t in (*MIX_TYPES, *MIX_IMATRIX_TYPES))}"
                                   ) from None


# ---------------------------------------------------------------------------------------------------------------
# sizes: one grammar for every size flag (--split-max-size, --target-size)

# K, M, G, T are powers of 1000, as llama-gguf-split's M and G; KiB … TiB powers of 1024; a trailing B is optional.
_SIZE = re.compile(r"(?P<value>\d+(?:\.\d+)?)\s*(?:(?P<unit>[KMGT])(?P<binary>I)?)?B?", re.IGNORECASE)
SIZE_HINT = "e.g. 4.2G or 500M (powers of 1000, as llama-gguf-split's), 3.9GiB (powers of 1024), or a byte count"


def parse_size(text: str, flag: str = "size") -> int:
    """`"4.2G"`, `"4.2GB"` (10⁹), `"3.9GiB"` (2³⁰), `"500M"`, `"123456789"` → bytes; `flag` names the value in
    the error. A fraction of a byte (`"1.5"`, `"0"`) is not a size."""
    m = _SIZE.fullmatch(str(text).strip())
    n_bytes = 0
    if m is not None and (m["unit"] or "." not in m["value"]):
        power = "KMGT".index(m["unit"].upper()) + 1 if m["unit"] else 0
        n_bytes = int(Decimal(m["value"]) * (1024 if m["binary"] else 1000) ** power)
    if n_bytes < 1:
        raise InvalidArgumentError(f"{flag} {text!r} is not a size", hint=SIZE_HINT)
    return n_bytes
