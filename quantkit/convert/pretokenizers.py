"""Byte-level BPE pre-tokenizers as data: the `tokenizer.ggml.pre` names quantkit knows, the regexes llama.cpp
splits text with for each (src/llama-vocab.cpp), how the Hugging Face tokenizer.json spells the same thing, and
the check hashes llama.cpp's converter names them by.

`export` uses it to write a tokenizer.json that splits text exactly as llama.cpp does; `convert` uses it the
other way round, to name the pre-tokenizer of a checkpoint from its tokenizer.json: first as
convert_hf_to_gguf.py does (`get_vocab_base_pre`: the sha256 of the token ids of CHECK_TEXT, looked up in its
table), else from the split regexes. Every name here is one llama.cpp's vocabulary loader accepts (its test
loads a vocabulary with each).
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
        PreTokenizer("gpt-2", (_GPT2,), add_bos=False),  # llama.cpp's spelling; "gpt2" is its tokenizer *model*
    )
}
_OLD_NAMES = {"gpt2": "gpt-2"}  # what quantkit wrote before (llama.cpp refuses it), still read by `export`

# convert_hf_to_gguf.py's check text (llama.cpp of the 0.3.36 sdist): spaces, tabs and newlines in runs, emoji,
# digit runs, Khmer, Chinese, Cyrillic, punctuation runs and contractions in both cases. Its token ids, as the
# HF tokenizer gives them with its special tokens (a BOS when the post-processor adds one), are hashed.
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f (multiple "
    "emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 "
    "?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
    "\'\'\'\'\'\'```````\"\"\"\"......!!!!!!?????? I\'ve been \'told he\'s there, \'RE you sure? \'M not sure "
    "I\'ll make it, \'D you like some tea? We\'Ve a\'lL"
)

# sha256(str(ids of CHECK_TEXT)) → tokenizer.ggml.pre: the entries of convert_hf_to_gguf.py's table whose names
# are in PRE_TOKENIZERS, each with the repo llama.cpp made it from (its test checks them against the sdist's)
CHECK_HASHES: dict[str, str] = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # meta-llama/Meta-Llama-3-8B
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    # ↑ deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B: Qwen2's ids after R1's BOS
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen/Qwen1.5-7B
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen/Qwen3-Embedding-0.6B
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # HuggingFaceTB/SmolLM-135M
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",  # evilfreelancer/ruGPT3XL
}

# The case-insensitive group as tokenizer.json files write it, before llama.cpp's rewrite for its regex engine.
_HF_SPELLINGS = {"(?i:'s|'t|'re|'ve|'m|'ll|'d)": _CONTRACTIONS_CI}


def normalize_regex(pattern: str) -> str:
    for hf, ours in _HF_SPELLINGS.items():
        pattern = pattern.replace(hf, ours)
    return pattern


def get_pre_tokenizer(name: str) -> PreTokenizer | None:
    return PRE_TOKENIZERS.get(_OLD_NAMES.get(name, name))


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
