"""Byte-level BPE pre-tokenizers as data: the `tokenizer.ggml.pre` names quantkit knows, the regexes llama.cpp
splits text with for each (src/llama-vocab.cpp), and how the Hugging Face tokenizer.json spells the same thing.

`export` uses it to write a tokenizer.json that splits text exactly as llama.cpp does; `convert` uses it the
other way round, to name the pre-tokenizer of a checkpoint from its tokenizer.json without running it.
"""
from __future__ import annotations

from dataclasses import dataclass

_CONTRACTIONS_CI = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = _CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2 = _CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


@dataclass(frozen=True)
class PreTokenizer:
    name: str  # tokenizer.ggml.pre
    regexes: tuple[str, ...]  # applied in turn, each splitting the pieces of the one before ("Isolated")
    add_bos: bool  # llama.cpp's default when the GGUF has no tokenizer.ggml.add_bos_token
    ignore_merges: bool = False  # a whole pre-token that is in the vocabulary is taken as it is (Llama-3)


PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    p.name: p
    for p in (
        PreTokenizer("llama-bpe", (_LLAMA3,), add_bos=True, ignore_merges=True),
        PreTokenizer("deepseek-r1-qwen", (_QWEN2,), add_bos=False),
        PreTokenizer("qwen2", (_QWEN2,), add_bos=False),
        PreTokenizer("smollm", (r"\p{N}", _GPT2), add_bos=False),
        PreTokenizer("gpt2", (_GPT2,), add_bos=False),
    )
}

# The case-insensitive group as tokenizer.json files write it, before llama.cpp's rewrite for its regex engine.
_HF_SPELLINGS = {"(?i:'s|'t|'re|'ve|'m|'ll|'d)": _CONTRACTIONS_CI}


def normalize_regex(pattern: str) -> str:
    for hf, ours in _HF_SPELLINGS.items():
        pattern = pattern.replace(hf, ours)
    return pattern


def get_pre_tokenizer(name: str) -> PreTokenizer | None:
    return PRE_TOKENIZERS.get(name)


def hf_pre_tokenizer(pre: PreTokenizer) -> dict:
    """tokenizer.json's `pre_tokenizer` that splits text as llama.cpp does for `pre`."""
    splits = [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
        for regex in pre.regexes
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    return {"type": "Sequence", "pretokenizers": [*splits, byte_level]}


def regexes_of_hf_pre_tokenizer(spec: dict | None) -> tuple[str, ...]:
    """The split regexes a tokenizer.json `pre_tokenizer` applies, in llama.cpp's spelling.

    Understands Sequence, Split (Isolated), Digits (individual) and ByteLevel with its built-in GPT-2 regex."""
    if not spec:
        return ()
    kind = spec.get("type")
    if kind == "Sequence":
        return tuple(r for sub in spec.get("pretokenizers", []) for r in regexes_of_hf_pre_tokenizer(sub))
    if kind == "Split":
        pattern = spec.get("pattern", {})
        regex = pattern.get("Regex") or pattern.get("String")
        return (normalize_regex(regex),) if regex else ()
    if kind == "Digits":
        return (r"\p{N}",) if spec.get("individual_digits") else (r"\p{N}+",)
    if kind == "ByteLevel":
        return (_GPT2,) if spec.get("use_regex", True) else ()
    return (f"<{kind}>",)  # something quantkit does not model: matches no known pre-tokenizer
