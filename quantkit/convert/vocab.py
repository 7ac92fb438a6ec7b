"""The tokenizer part of a GGUF, from tokenizer.json/tokenizer_config.json: tokens and their types, merges,
special ids, add_bos, the chat template, and `tokenizer.ggml.pre` named from the tokenizer's own
pre-tokenizer (no hashing of a test string: the regexes are compared with quantkit's table)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from gguf import GGUFWriter, SpecialVocab, TokenType

from ..errors import CheckpointError, UnknownPreTokenizerError
from .pretokenizers import PRE_TOKENIZERS, regexes_of_hf_pre_tokenizer

log = logging.getLogger(__name__)

# Pre-tokenizers that share their regexes with another are told apart by the BOS token their tokenizer adds:
# the R1-Distill-Qwen tokenizer is Qwen2's plus DeepSeek's special tokens and a BOS.
_BOS_MARKS = {"deepseek-r1-qwen": "<｜begin▁of▁sentence｜>"}
_SPACE = chr(ord(" ") + 256)  # how gguf's SpecialVocab writes a space inside a merge part


@dataclass
class Vocab:
    tokens: list[str]
    token_types: list[int]
    pre: str
    special: SpecialVocab  # merges, special ids, add_bos/add_eos, chat template (gguf's own reader)

    def add_to(self, writer: GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        self.special.add_to_gguf(writer, quiet=True)


def read_hf_vocab(folder: Path, n_vocab: int) -> Vocab:
    tokenizer = _load_json(folder / "tokenizer.json")
    config = _load_json(folder / "tokenizer_config.json", required=False)
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise CheckpointError(f"{folder / 'tokenizer.json'} is not a byte-level BPE tokenizer",
                              hint="quantkit converts BPE tokenizers (the R1-Distill Qwen and Llama families)")
    tokens, types = _tokens(model["vocab"], tokenizer.get("added_tokens") or [], n_vocab, folder)
    special = SpecialVocab(folder, load_merges=False, n_vocab=n_vocab)
    special.merges = _merges(model.get("merges"), folder)
    return Vocab(tokens, types, detect_pre(tokenizer, config), special)


def _merges(merges, folder: Path) -> list[str]:
    """The merges as "a b" strings, as gguf's SpecialVocab gives them (a space inside a part becomes U+0120),
    in one pass with str.replace instead of its loop over every character."""
    if not isinstance(merges, list) or not merges:
        raise CheckpointError(f"{folder / 'tokenizer.json'} has no BPE merges", hint="the tokenizer files look damaged")
    if all(isinstance(m, str) for m in merges):
        return list(merges)
    if all(isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m) for m in merges):
        return [f"{a.replace(' ', _SPACE)} {b.replace(' ', _SPACE)}" for a, b in merges]
    raise CheckpointError(f"{folder / 'tokenizer.json'} has merges in a form quantkit does not know",
                          hint="expected a list of \"a b\" strings or of [a, b] pairs")


def _load_json(path: Path, required: bool = True) -> dict:
    if not path.is_file():
        if required:
            raise CheckpointError(f"{path.parent} has no {path.name}", hint="the checkpoint needs its tokenizer files")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object", hint="the tokenizer files look damaged")
    return data


def _looks_special(text: str) -> bool:
    # as llama.cpp's converter: <|...|> and DeepSeek's <｜...｜> are control tokens even when not marked special
    return (text.startswith("<|") and text.endswith("|>")) or (text.startswith("<｜") and text.endswith("｜>"))


def _tokens(vocab: dict[str, int], added: list[dict], n_vocab: int, folder: Path) -> tuple[list[str], list[int]]:
    def is_id(i) -> bool:
        return isinstance(i, int) and not isinstance(i, bool) and i >= 0

    if not all(is_id(i) for i in vocab.values()):
        raise CheckpointError(f"{folder / 'tokenizer.json'} has a vocabulary entry whose id is not a number",
                              hint="the tokenizer files look damaged")
    if not isinstance(added, list) or not all(isinstance(e, dict) and isinstance(e.get("content"), str)
                                              and is_id(e.get("id")) for e in added):
        raise CheckpointError(f"{folder / 'tokenizer.json'} has an added token without its text or id",
                              hint="the tokenizer files look damaged")
    by_id: dict[int, tuple[str, int]] = {i: (text, int(TokenType.NORMAL)) for text, i in vocab.items()}
    for entry in added:
        text = entry["content"]
        if entry.get("special") or _looks_special(text):
            by_id[entry["id"]] = (text, int(TokenType.CONTROL))
        else:
            by_id[entry["id"]] = (text.replace("\u2581", " "), int(TokenType.USER_DEFINED))
    if by_id and max(by_id) >= n_vocab:
        raise CheckpointError(f"{folder}: the tokenizer has token id {max(by_id)} but vocab_size is {n_vocab}")
    tokens = [by_id.get(i, (f"[PAD{i}]", int(TokenType.UNUSED))) for i in range(n_vocab)]
    return [t for t, _ in tokens], [k for _, k in tokens]


def detect_pre(tokenizer: dict, config: dict) -> str:
    """`tokenizer.ggml.pre` for this tokenizer, from its split regexes."""
    regexes = regexes_of_hf_pre_tokenizer(tokenizer.get("pre_tokenizer"))
    candidates = [p.name for p in PRE_TOKENIZERS.values() if p.regexes == regexes]
    if not candidates:
        raise UnknownPreTokenizerError(f"the tokenizer's pre-tokenizer is not one quantkit knows ({regexes!r:.200})")
    bos = _token_text(config.get("bos_token"))
    adds_bos = bool(config.get("add_bos_token", False)) or _post_processor_adds(tokenizer, bos)
    marked = [n for n in candidates if n in _BOS_MARKS and adds_bos and _BOS_MARKS[n] == bos]
    plain = [n for n in candidates if n not in _BOS_MARKS]
    chosen = (marked or plain or candidates)[0]
    log.info("pre-tokenizer: %s", chosen)
    return chosen


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _post_processor_adds(tokenizer: dict, bos: str | None) -> bool:
    post = tokenizer.get("post_processor") or {}
    for proc in post.get("processors", [post]):
        single = proc.get("single") or []
        if single and single[0].get("SpecialToken", {}).get("id") == bos:
            return True
    return False
