"""A GGUF's byte-level BPE vocabulary as Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json)
that tokenize text exactly as llama.cpp does with the GGUF."""
from __future__ import annotations

from dataclasses import dataclass

from gguf import GGUFReader, TokenType

from ...errors import UnsupportedModelError
from ...gguf.reader import field
from ..pretokenizers import PRE_TOKENIZERS, PreTokenizer, get_pre_tokenizer, hf_pre_tokenizer


@dataclass
class GGUFVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: PreTokenizer
    add_bos: bool
    add_eos: bool
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None
    chat_template: str | None

    def token(self, token_id: int | None) -> str | None:
        return None if token_id is None else self.tokens[token_id]


def read_gguf_vocab(reader: GGUFReader) -> GGUFVocab:
    model = field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise UnsupportedModelError(
            f"tokenizer model {model!r} is not supported: quantkit exports byte-level BPE (gpt2) vocabularies"
        )
    pre_name = field(reader, "tokenizer.ggml.pre", "gpt-2")
    pre = get_pre_tokenizer(pre_name)
    if pre is None:
        raise UnsupportedModelError(
            f"pre-tokenizer {pre_name!r} is not supported", hint=f"known ones: {', '.join(PRE_TOKENIZERS)}"
        )
    tokens = field(reader, "tokenizer.ggml.tokens", [])
    return GGUFVocab(
        tokens=tokens,
        token_types=field(reader, "tokenizer.ggml.token_type", [int(TokenType.NORMAL)] * len(tokens)),
        merges=field(reader, "tokenizer.ggml.merges", []),
        pre=pre,
        add_bos=bool(field(reader, "tokenizer.ggml.add_bos_token", pre.add_bos)),
        add_eos=bool(field(reader, "tokenizer.ggml.add_eos_token", False)),
        bos_id=field(reader, "tokenizer.ggml.bos_token_id"),
        eos_id=field(reader, "tokenizer.ggml.eos_token_id"),
        pad_id=field(reader, "tokenizer.ggml.padding_token_id"),
        unk_id=field(reader, "tokenizer.ggml.unknown_token_id"),
        chat_template=field(reader, "tokenizer.chat_template"),
    )


_ADDED_TYPES = {int(TokenType.CONTROL), int(TokenType.USER_DEFINED)}


def _added_tokens(vocab: GGUFVocab) -> list[dict]:
    return [
        {
            "id": i,
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": kind == int(TokenType.CONTROL),
        }
        for i, (text, kind) in enumerate(zip(vocab.tokens, vocab.token_types))
        if kind in _ADDED_TYPES
    ]


def _post_processor(vocab: GGUFVocab) -> dict:
    def special(token_id: int) -> dict:
        return {"SpecialToken": {"id": vocab.tokens[token_id], "type_id": 0}}

    prefix = [special(vocab.bos_id)] if vocab.add_bos and vocab.bos_id is not None else []
    suffix = [special(vocab.eos_id)] if vocab.add_eos and vocab.eos_id is not None else []
    if not prefix and not suffix:
        return {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    used = {vocab.bos_id} if prefix else set()
    used |= {vocab.eos_id} if suffix else set()
    return {
        "type": "TemplateProcessing",
        "single": [*prefix, {"Sequence": {"id": "A", "type_id": 0}}, *suffix],
        "pair": [*prefix, {"Sequence": {"id": "A", "type_id": 0}}, *suffix,
                 *prefix, {"Sequence": {"id": "B", "type_id": 1}}, *suffix],
        "special_tokens": {
            vocab.tokens[i]: {"id": vocab.tokens[i], "ids": [i], "tokens": [vocab.tokens[i]]} for i in sorted(used)
        },
    }


def tokenizer_json(vocab: GGUFVocab) -> dict:
    """The `tokenizers` library's serialization of the vocabulary (tokenizer.json)."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens(vocab),
        "normalizer": None,
        "pre_tokenizer": hf_pre_tokenizer(vocab.pre),
        "post_processor": _post_processor(vocab),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": vocab.pre.ignore_merges,
            "vocab": {text: i for i, text in enumerate(vocab.tokens)},
            "merges": [m.split(" ", 1) for m in vocab.merges],
        },
    }


def tokenizer_config(vocab: GGUFVocab, model_max_length: int | None) -> dict:
    added = {
        str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        for t in _added_tokens(vocab)
    }
    config = {
        "add_bos_token": vocab.add_bos,
        "add_eos_token": vocab.add_eos,
        "added_tokens_decoder": added,
        "bos_token": vocab.token(vocab.bos_id),
        "eos_token": vocab.token(vocab.eos_id),
        "pad_token": vocab.token(vocab.pad_id),
        "unk_token": vocab.token(vocab.unk_id),
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length or 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "legacy": False,
    }
    if vocab.chat_template:
        config["chat_template"] = vocab.chat_template
    return config
