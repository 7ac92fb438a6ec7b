"""The tokenizer part of a GGUF, from tokenizer.json/tokenizer_config.json: tokens and their types, merges,
special ids, add_bos, the chat template, and `tokenizer.ggml.pre`.

The pre-tokenizer is named as llama.cpp's converter names it: the tokenizer (the `tokenizers` library, no
transformers) tokenizes convert_hf_to_gguf.py's check text, and the sha256 of the ids is looked up in its table
(pretokenizers.CHECK_HASHES). A tokenizer that table does not know — a GPT-2-style tokenizer with its own
vocabulary, say — is named from its split regexes instead, compared with quantkit's table; one that neither
knows is refused before anything is written."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from gguf import GGUFWriter, SpecialVocab, TokenType

from ..errors import CheckpointError, UnknownPreTokenizerError
from .pretokenizers import CHECK_HASHES, CHECK_TEXT, PRE_TOKENIZERS, regexes_of_hf_pre_tokenizer

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
    """The vocabulary of the checkpoint in `folder`. Its check hash (the `tokenizers` library's parse of
    tokenizer.json, GIL-bound) is computed by a child process while this one reads the tokens and merges."""
    with ChildCheckHash(folder / "tokenizer.json") as hashing:
        tokenizer, text = _load_json_text(folder / "tokenizer.json")
        config = _load_json(folder / "tokenizer_config.json", required=False)
        model = tokenizer.get("model") or {}
        if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
            raise CheckpointError(f"{folder / 'tokenizer.json'} is not a byte-level BPE tokenizer",
                                  hint="quantkit converts BPE tokenizers (the R1-Distill Qwen and Llama families)")
        tokens, types = _tokens(model["vocab"], tokenizer.get("added_tokens") or [], n_vocab, folder)
        special = _special_vocab(folder, tokenizer, n_vocab)
        special.merges = _merges(model.get("merges"), folder)
        return Vocab(tokens, types, pre_of(tokenizer, config, hashing.result(text)), special)


# What gguf's SpecialVocab (load_merges=False) reads of a folder besides tokenizer.json, and what it reads of that
_SPECIAL_FILES = ("tokenizer_config.json", "config.json", "chat_template.json", "chat_template.jinja",
                  "additional_chat_templates")
_SPECIAL_KEYS = ("added_tokens", "post_processor")


def _special_vocab(folder: Path, tokenizer: dict, n_vocab: int) -> SpecialVocab:
    """gguf's SpecialVocab of `folder` (special ids, add_bos/add_eos, the chat template), read from a view of the
    folder whose tokenizer.json holds only the keys SpecialVocab reads without merges: it would otherwise parse
    the whole 7 MB again."""
    with tempfile.TemporaryDirectory(prefix="quantkit-vocab-") as tmp:
        view = Path(tmp)
        for name in _SPECIAL_FILES:
            if (folder / name).exists():
                _link(folder / name, view / name)
        slim = {key: tokenizer[key] for key in _SPECIAL_KEYS if key in tokenizer}
        (view / "tokenizer.json").write_text(json.dumps(slim or {"model": {}}), encoding="utf-8")
        return SpecialVocab(view, load_merges=False, n_vocab=n_vocab)


def _link(source: Path, link: Path) -> None:
    try:
        link.symlink_to(source.resolve())
    except OSError:  # no symbolic links here: a copy reads the same
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, link)


def _merges(merges, folder: Path) -> list[str]:
    """The merges as "a b" strings, as gguf's SpecialVocab gives them (a space inside a part becomes U+0120),
    in one pass with str.replace instead of its loop over every character."""
    if not isinstance(merges, list) or not merges:
        raise CheckpointError(f"{folder / 'tokenizer.json'} has no BPE merges", hint="the tokenizer files look damaged")
    kinds = set(map(type, merges))  # checked a kind at a time: a vocabulary has 150,000 merges
    if kinds == {str}:
        return list(merges)
    if kinds == {list} and set(map(len, merges)) == {2} and set(map(type, chain.from_iterable(merges))) == {str}:
        return [f"{a.replace(' ', _SPACE)} {b.replace(' ', _SPACE)}" for a, b in merges]
    raise CheckpointError(f"{folder / 'tokenizer.json'} has merges in a form quantkit does not know",
                          hint="expected a list of \"a b\" strings or of [a, b] pairs")


def _load_json(path: Path, required: bool = True) -> dict:
    if not required and not path.is_file():
        return {}
    return _load_json_text(path)[0]


def _load_json_text(path: Path) -> tuple[dict, str]:
    """The JSON object in `path`, and its text."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent} has no {path.name}", hint="the checkpoint needs its tokenizer files")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object", hint="the tokenizer files look damaged")
    return data, text


def _looks_special(text: str) -> bool:
    # as llama.cpp's converter: <|...|> and DeepSeek's <｜...｜> are control tokens even when not marked special
    return (text.startswith("<|") and text.endswith("|>")) or (text.startswith("<｜") and text.endswith("｜>"))


def _tokens(vocab: dict[str, int], added: list[dict], n_vocab: int, folder: Path) -> tuple[list[str], list[int]]:
    def is_id(i) -> bool:
        return isinstance(i, int) and not isinstance(i, bool) and i >= 0

    ids = vocab.values()
    if not (set(map(type, ids)) <= {int} and min(ids, default=0) >= 0):
        raise CheckpointError(f"{folder / 'tokenizer.json'} has a vocabulary entry whose id is not a number",
                              hint="the tokenizer files look damaged")
    if not isinstance(added, list) or not all(isinstance(e, dict) and isinstance(e.get("content"), str)
                                              and is_id(e.get("id")) for e in added):
        raise CheckpointError(f"{folder / 'tokenizer.json'} has an added token without its text or id",
                              hint="the tokenizer files look damaged")
    top = max(chain(ids, (e["id"] for e in added)), default=-1)
    if top >= n_vocab:
        raise CheckpointError(f"{folder}: the tokenizer has token id {top} but vocab_size is {n_vocab}")
    texts: list[str | None] = [None] * n_vocab
    kinds = [int(TokenType.NORMAL)] * n_vocab
    for text, i in vocab.items():
        texts[i] = text
    for entry in added:
        text, i = entry["content"], entry["id"]
        if entry.get("special") or _looks_special(text):
            texts[i], kinds[i] = text, int(TokenType.CONTROL)
        else:
            texts[i], kinds[i] = text.replace("\u2581", " "), int(TokenType.USER_DEFINED)
    for i, text in enumerate(texts):  # ids nothing names: padding, as llama.cpp's converter writes it
        if text is None:
            texts[i], kinds[i] = f"[PAD{i}]", int(TokenType.UNUSED)
    return texts, kinds


def detect_pre(tokenizer: dict, config: dict, text: str | None = None) -> str:
    """`tokenizer.ggml.pre` for this tokenizer (`text`: tokenizer.json as read, to spare a second serialization):
    by its check hash as llama.cpp's converter names it, else by its split regexes."""
    return pre_of(tokenizer, config, check_hash(text if text is not None else json.dumps(tokenizer)))


def pre_of(tokenizer: dict, config: dict, digest: str | None) -> str:
    """detect_pre's choice, given the tokenizer's check hash (None: the `tokenizers` library cannot read it)."""
    by_regexes = pre_of_regexes(tokenizer, config)
    chosen = CHECK_HASHES.get(digest or "") or by_regexes
    if chosen is None:
        regexes = regexes_of_hf_pre_tokenizer(tokenizer.get("pre_tokenizer"))
        raise UnknownPreTokenizerError(
            f"the tokenizer's pre-tokenizer is one neither quantkit nor llama.cpp's converter knows "
            f"(check hash {(digest or 'unavailable')[:16]}…, regexes {regexes!r:.120})")
    how = "check hash" if digest in CHECK_HASHES else "split regexes"
    log.info("pre-tokenizer: %s (by its %s%s)", chosen, how,
             f"; its regexes alone would say {by_regexes}" if by_regexes not in (None, chosen) else "")
    return chosen


def check_hash(tokenizer_json: str) -> str | None:
    """convert_hf_to_gguf.py's fingerprint of a tokenizer: the sha256 of `str(ids)` for CHECK_TEXT, special tokens
    added as the tokenizer's post-processor adds them (what transformers' `encode` does); None when the
    `tokenizers` library cannot read this tokenizer.json."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(tokenizer_json)
    except Exception as e:  # the library's own error type is not public; the regexes still name it
        _unreadable(e)
        return None
    return hashlib.sha256(str(tokenizer.encode(CHECK_TEXT).ids).encode()).hexdigest()


def _unreadable(reason) -> None:
    log.warning("the tokenizers library cannot read tokenizer.json (%s); naming its pre-tokenizer by its regexes",
                reason)


# The child's whole program: argv[1] the tokenizer.json, argv[2] the check text; prints the hash, or exits 3 with
# the library's complaint when it cannot read the file (any other failure: the parent computes the hash itself).
_CHILD = """
import hashlib, sys
from tokenizers import Tokenizer
try:
    tokenizer = Tokenizer.from_file(sys.argv[1])
except Exception as e:
    print(e, file=sys.stderr)
    sys.exit(3)
print(hashlib.sha256(str(tokenizer.encode(sys.argv[2]).ids).encode()).hexdigest())
"""


class ChildCheckHash:
    """check_hash of a tokenizer.json computed by a child Python process started at once, so that its ~0.3 s of
    GIL-bound parsing runs beside this process's own work. `result(text)` waits for it; where the child could not
    start or failed, it computes the hash in this process from `text`. The child never outlives the `with`."""

    def __init__(self, path: Path):
        try:
            self._child: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(path), CHECK_TEXT], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
        except (OSError, ValueError) as e:
            log.debug("no child process for the check hash (%s): computed here", e)
            self._child = None

    def result(self, text: str) -> str | None:
        if self._child is not None:
            out, err = self._child.communicate()
            code, self._child = self._child.returncode, None
            if code == 0 and len(out.strip()) == 64:
                return out.strip()
            if code == 3:
                _unreadable(err.strip().splitlines()[-1] if err.strip() else "no reason given")
                return None
            log.debug("the check-hash child failed (exit %s): computed here", code)
        return check_hash(text)

    def __enter__(self) -> "ChildCheckHash":
        return self

    def __exit__(self, *exc) -> None:
        if self._child is not None:  # left early (a refusal): the child's answer is not wanted
            self._child.kill()
            self._child.communicate()
            self._child = None


def pre_of_regexes(tokenizer: dict, config: dict) -> str | None:
    """The name in quantkit's table whose regexes the tokenizer's pre-tokenizer applies; None if none does."""
    regexes = regexes_of_hf_pre_tokenizer(tokenizer.get("pre_tokenizer"))
    candidates = [p.name for p in PRE_TOKENIZERS.values() if p.regexes == regexes]
    if not candidates:
        return None
    bos = _token_text(config.get("bos_token"))
    adds_bos = bool(config.get("add_bos_token", False)) or _post_processor_adds(tokenizer, bos)
    marked = [n for n in candidates if n in _BOS_MARKS and adds_bos and _BOS_MARKS[n] == bos]
    plain = [n for n in candidates if n not in _BOS_MARKS]
    return (marked or plain or candidates)[0]


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _post_processor_adds(tokenizer: dict, bos: str | None) -> bool:
    post = tokenizer.get("post_processor") or {}
    for proc in post.get("processors", [post]):
        single = proc.get("single") or []
        if single and single[0].get("SpecialToken", {}).get("id") == bos:
            return True
    return False
