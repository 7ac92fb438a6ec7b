"""A GGUF model loaded by libllama: its tokenizer, chat template, special tokens and weights."""
from __future__ import annotations

import ctypes
import logging
import os
import re
from pathlib import Path

import numpy as np

from ..gguf import reader as gguf_file
from ..errors import RuntimeLoadError
from ..resources import Closeable
from ._lib import capture, lib
from .devices import extra_buffers_default, supports_gpu_offload

log = logging.getLogger(__name__)

ALL_LAYERS = -1  # libllama: a negative n_gpu_layers offloads every layer and the output layer
SEE_LOG = "run with -v to see llama.cpp's log; the architecture or a tensor type may be newer than this libllama"


def check_gguf_file(path: Path) -> None:
    """Validate the file (exists, GGUF magic, complete header and tensor data) before libllama sees a path,
    so that a bad file is a clear error rather than a libllama failure."""
    gguf_file.read_header(path)


class Model(Closeable):
    """A loaded llama.cpp model (or only its vocabulary): tokenizer, template, special tokens, shape."""

    def __init__(self, path: Path, ptr, n_gpu_layers: int):
        llama_cpp = lib()
        self.path = path
        self.ptr = ptr
        self.n_gpu_layers = n_gpu_layers
        self.layer_devices: list[str] = []  # where libllama put each layer, the output layer last ("CPU", "RPC0" …)
        self.vocab = llama_cpp.llama_model_get_vocab(ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(ptr))
        self.n_layer = int(llama_cpp.llama_model_n_layer(ptr))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos = int(llama_cpp.llama_vocab_eos(self.vocab))
        self.add_eos = bool(llama_cpp.llama_vocab_get_add_eos(self.vocab))
        self.vocab_type = int(llama_cpp.llama_vocab_type(self.vocab))
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._to_piece = llama_cpp.llama_token_to_piece
        self._pieces: dict[int, bytes] = {}

    # -- tokens -----------------------------------------------------------------------------------------------

    def tokenize(self, text: bytes, add_special: bool = True, parse_special: bool = False) -> np.ndarray:
        """Token ids (int32) of `text`, as llama.cpp's common_tokenize makes them."""
        llama_cpp = lib()
        n_max = len(text) + 8
        out = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self.vocab, text, len(text), out, n_max, add_special, parse_special)
        if n < 0:  # a tokenizer that makes more tokens than bytes: retry with the size it asked for
            n_max = -n
            out = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self.vocab, text, len(text), out, n_max, add_special, parse_special)
        return np.frombuffer(out, dtype=np.int32, count=n).copy()

    def prompt_tokens(self, text: str) -> np.ndarray:
        """The tokens of a rendered chat prompt: special tokens parsed, and BOS exactly once where the
        vocabulary wants it (templates that write `bos_token` themselves must not get a second one)."""
        tokens = self.tokenize(text.encode("utf-8"), add_special=False, parse_special=True)
        if self.add_bos and self.bos >= 0 and (len(tokens) == 0 or tokens[0] != self.bos):
            tokens = np.concatenate([np.array([self.bos], dtype=np.int32), tokens])
        return tokens

    def token_piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (control tokens rendered only when `special`)."""
        key = token if not special else -1 - token
        piece = self._pieces.get(key)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self._to_piece(self.vocab, token, buf, len(buf), 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._to_piece(self.vocab, token, buf, len(buf), 0, special)
            piece = self._pieces[key] = buf.raw[:n]
        return piece

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._is_eog(self.vocab, token))

    def token_text(self, token: int) -> bytes:
        """A token's text as the vocabulary stores it (not rendered to bytes)."""
        return lib().llama_vocab_get_text(self.vocab, token)

    def token_texts(self) -> list[bytes]:
        """Every token's text, in id order."""
        llama_cpp = lib()
        return [llama_cpp.llama_vocab_get_text(self.vocab, i) for i in range(self.n_vocab)]

    # -- metadata ---------------------------------------------------------------------------------------------

    def chat_template_source(self) -> str | None:
        """The Jinja chat template stored in the GGUF (tokenizer.chat_template), if any."""
        source = lib().llama_model_chat_template(self.ptr, None)
        return source.decode("utf-8", errors="replace") if source else None

    def special_text(self, token: int) -> str:
        """The text of a special token (BOS, EOS) as a template writes it; "" for none."""
        return self.token_piece(token, special=True).decode("utf-8", "replace") if token >= 0 else ""

    def meta_int(self, key: str) -> int | None:
        """An integer metadata value, read through libllama (no second parse of the file)."""
        buf = ctypes.create_string_buffer(64)
        n = lib().llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        try:
            return int(buf.value.decode()) if n >= 0 else None
        except ValueError:
            return None

    @property
    def layers_on_gpu(self) -> int:
        """The layers libllama actually offloads (it clamps n_gpu_layers; -1 means all, the output layer counted)."""
        if self.n_gpu_layers == 0 or not supports_gpu_offload():
            return 0
        everything = self.n_layer + 1
        return everything if self.n_gpu_layers < 0 else min(self.n_gpu_layers, everything)

    # -- lifetime ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self.ptr is not None:
            lib().llama_model_free(self.ptr)
            self.ptr = None


def load_vocabulary(path: str | Path | gguf_file.GGUFFile, *, validate: bool = True) -> Model:
    """Only the tokenizer of a GGUF file (libllama's vocab_only load: no weights read). `validate=False` skips
    quantkit's own header check, for a file just written whose vocabulary libllama is asked to judge."""
    if validate or isinstance(path, gguf_file.GGUFFile):
        path = gguf_file.read_gguf(path).first_shard  # validated; libllama loads a split model from its first shard
    path = Path(path)
    llama_cpp = lib()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with capture(quiet=True) as lines:
        ptr = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
    if not ptr:
        raise RuntimeLoadError(f"llama.cpp could not read the vocabulary of {path}{_reason(lines)}", hint=SEE_LOG)
    return Model(path, ptr, 0)


def load_model(path: str | Path | gguf_file.GGUFFile, n_gpu_layers: int = 0,
               extra_buffers: bool | None = None) -> Model:
    """Load a GGUF model (a path, or a GGUFFile already read and so not read again) through libllama with
    `n_gpu_layers` offloaded (ALL_LAYERS: everything). Choosing that number from the GPU's memory is
    offload.py's job."""
    path = gguf_file.read_gguf(path).first_shard  # validated; libllama loads a split model from its first shard
    llama_cpp = lib()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers
    params.use_extra_bufts = extra_buffers_default() if extra_buffers is None else extra_buffers
    if not params.use_extra_bufts:
        log.info("ggml extra buffer types (repack, AMX) off")
    with capture(quiet=True) as lines:
        ptr = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
    if not ptr:
        raise RuntimeLoadError(f"llama.cpp could not load {path}{_reason(lines)}", hint=SEE_LOG)
    log.info("loaded %s (n_gpu_layers %d)", path.name, n_gpu_layers)
    model = Model(path, ptr, n_gpu_layers)
    model.layer_devices = _layer_devices(lines)
    return model


_ASSIGNED = re.compile(r"layer\s+(\d+) assigned to device (\S+?),")


def _layer_devices(load_log: list[str]) -> list[str]:
    """The device of each layer (the output layer last), from libllama's load log."""
    placed = {int(m[1]): m[2] for m in map(_ASSIGNED.search, load_log) if m}
    return [placed[i] for i in sorted(placed)]


def _reason(lines: list[str]) -> str:
    """libllama's reason for a failed load (`llama_model_load: error loading model: REASON`), as `: REASON`."""
    for line in lines:
        if "error loading model" in line:
            return ": " + line.split("error loading model", 1)[1].lstrip(": ").strip()
    return ""
