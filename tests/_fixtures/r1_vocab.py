"""Vocabulary-only GGUFs of the two R1-Distill tokenizers, made from llama.cpp's ggml-vocab-qwen2.gguf and
ggml-vocab-llama-bpe.gguf: the same BPE vocabularies with DeepSeek's special tokens put in their slots, R1's
BOS/EOS ids with add_bos on, and the R1-Distill chat template from llama.cpp's models/templates. What a
converted R1-Distill GGUF holds in its tokenizer keys, without its weights."""
from __future__ import annotations

from pathlib import Path

import gguf
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

from reference.cache import cached_dir
from reference.sdist import chat_template, vocab_gguf

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
CONTROL, USER_DEFINED = int(gguf.TokenType.CONTROL), int(gguf.TokenType.USER_DEFINED)

# ids from the DeepSeek-R1-Distill tokenizer.json files; the think tags and role markers are not "special" there
R1_VOCABS = {
    "qwen": dict(base="qwen2", template="deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", bos=151646, eos=151643,
                 tokens={151643: (EOS, CONTROL), 151644: ("<｜User｜>", USER_DEFINED),
                         151645: ("<｜Assistant｜>", USER_DEFINED), 151646: (BOS, CONTROL),
                         151648: ("<think>", USER_DEFINED), 151649: ("</think>", USER_DEFINED)}),
    "llama": dict(base="llama-bpe", template="deepseek-ai-DeepSeek-R1-Distill-Llama-8B", bos=128000, eos=128001,
                  tokens={128000: (BOS, CONTROL), 128001: (EOS, CONTROL), 128011: ("<｜User｜>", USER_DEFINED),
                          128012: ("<｜Assistant｜>", USER_DEFINED), 128013: ("<think>", USER_DEFINED),
                          128014: ("</think>", USER_DEFINED)}),
}


def r1_vocab_gguf(family: str) -> Path:
    spec = R1_VOCABS[family]

    def build(tmp: Path) -> None:
        reader = gguf.GGUFReader(vocab_gguf(spec["base"]))
        tokens = list(reader.get_field("tokenizer.ggml.tokens").contents())
        types = list(reader.get_field("tokenizer.ggml.token_type").contents())
        for i, (text, kind) in spec["tokens"].items():
            tokens[i], types[i] = text, kind
        A, S = gguf.GGUFValueType.ARRAY, gguf.GGUFValueType
        new = {
            "tokenizer.ggml.tokens": MetadataDetails(A, tokens, sub_type=S.STRING),
            "tokenizer.ggml.token_type": MetadataDetails(A, types, sub_type=S.INT32),
            "tokenizer.ggml.bos_token_id": MetadataDetails(S.UINT32, spec["bos"]),
            "tokenizer.ggml.eos_token_id": MetadataDetails(S.UINT32, spec["eos"]),
            "tokenizer.ggml.add_bos_token": MetadataDetails(S.BOOL, True),
            "tokenizer.chat_template": MetadataDetails(S.STRING, chat_template(spec["template"])),
        }
        arch = reader.get_field("general.architecture").contents()
        writer = gguf.GGUFWriter(tmp / "vocab.gguf", arch)
        copy_with_new_metadata(reader, writer, new, [])

    return cached_dir(f"r1-vocab-{family}-v1", build) / "vocab.gguf"
