"""The bad-input corpus: one table of everything a user can hand quantkit that it must refuse, and the builders
that make each input on the fly.

A row says which command it runs, what is wrong with the input (in words, for the README), how to build the
input (a function of a `Work` folder that returns the command line after `quantkit`), the exit code, and the
words the one-line error must contain. A row for a new command is one line: see the last section of CORPUS.

`python -m tests._fixtures.bad_inputs` prints the README section "What quantkit refuses and why", which
tests/test_bad_inputs.py checks against README.md.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import gguf_bytes as G
from reference.cache import cached_dir

VT = G.VT
THREADS = ["--threads", "1"]  # llama.cpp's spinning threads collapse when the machine is shared
CPU = [*THREADS, "-ngl", "0"]


# ---- the good inputs every row spoils one thing of ---------------------------------------------------------

@dataclass(frozen=True)
class Good:
    model: Path  # a tiny llama GGUF: 1 layer, a real 3,000-token BPE vocabulary, R1's chat template
    checkpoint: Path  # the same model exported to a Hugging Face folder (config, bf16 safetensors, tokenizer)


def good_inputs() -> Good:
    """Built once per machine (a few seconds), then read from the test cache."""

    def build(tmp: Path) -> None:
        from quantkit.convert.export import export_gguf

        from reference.sdist import chat_template
        from .tiny_gguf_models import TinyShape, reduced_vocab_gguf, write_tiny_model

        write_tiny_model(tmp / "model.gguf", "llama", reduced_vocab_gguf("llama-bpe"), TinyShape(n_layer=1),
                         chat_template=chat_template("deepseek-ai-DeepSeek-R1-Distill-Llama-8B"))
        export_gguf(tmp / "model.gguf", tmp / "checkpoint")

    folder = cached_dir("bad-inputs-v1", build)
    return Good(folder / "model.gguf", folder / "checkpoint")


GOOD_RECIPE = """\
source = "{checkpoint}"
outtype = "F16"
ladder = ["Q8_0"]

[perplexity]
dataset = "python-docs"
ctx = 64
chunks = 1
"""


# ---- the folder a row works in -----------------------------------------------------------------------------

class NeedsRoot(Exception):
    """The row mounts a file system, which only root may do."""


@dataclass
class Work:
    dir: Path
    mounts: list[Path] = field(default_factory=list)

    @property
    def good(self) -> Good:
        return good_inputs()  # built on first use: the rows that spoil a GGUF of their own never need it

    def file(self, name: str, data: bytes | str) -> str:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def folder(self, name: str) -> str:
        path = self.dir / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def gguf(self, data: bytes | G.Layout, name: str = "model.gguf") -> str:
        return self.file(name, data.data if isinstance(data, G.Layout) else data)

    def model(self, edit: Callable[[bytearray], None] | None = None) -> str:
        """A copy of the good model, edited in place by `edit`."""
        data = bytearray(self.good.model.read_bytes())
        if edit:
            edit(data)
        return self.gguf(bytes(data))

    def checkpoint(self, **files: bytes | str | dict | list | None) -> str:
        """A copy of the good checkpoint with files replaced (bytes, text, or JSON) or removed (None)."""
        folder = self.dir / "checkpoint"
        shutil.copytree(self.good.checkpoint, folder)
        for name, content in files.items():
            path = folder / name.replace("__", ".")
            if content is None:
                path.unlink()
            elif isinstance(content, (dict, list)):
                path.write_text(json.dumps(content))
            else:
                path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(folder)

    def config(self, **changes) -> dict:
        config = json.loads((self.good.checkpoint / "config.json").read_text())
        config.update(changes)
        return config

    def tokenizer(self, edit: Callable[[dict], None]) -> dict:
        tok = json.loads((self.good.checkpoint / "tokenizer.json").read_text())
        edit(tok)
        return tok

    def safetensors(self, edit: Callable[[dict], None] | None = None, *, header: bytes | None = None,
                    length: int | None = None) -> bytes:
        """The good checkpoint's model.safetensors with its JSON header edited (or replaced by `header`, or its
        length field set to `length`), the tensor data unchanged."""
        raw = (self.good.checkpoint / "model.safetensors").read_bytes()
        (n,) = struct.unpack_from("<Q", raw)
        data = raw[8 + n:]
        if header is None:
            parsed = json.loads(raw[8:8 + n])
            if edit:
                edit(parsed)
            header = json.dumps(parsed).encode()
        return struct.pack("<Q", len(header) if length is None else length) + header + data

    def recipe(self, text: str = GOOD_RECIPE, **fmt) -> str:
        return self.file("recipe.toml", text.format(checkpoint=self.good.checkpoint, **fmt))

    def mount(self, name: str, size: str, readonly: bool = False, fill: bool = False) -> str:
        """A small tmpfs at `name` (read-only, or filled up), unmounted when the row ends."""
        if os.geteuid() != 0:
            raise NeedsRoot(f"mounting a {size} tmpfs needs root")
        path = self.dir / name
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        self.mounts.append(path)
        if fill:
            with open(path / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
        if readonly:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        return str(path)

    def close(self) -> None:
        for path in reversed(self.mounts):
            subprocess.run(["umount", str(path)], check=False)


# ---- GGUF edits --------------------------------------------------------------------------------------------

def _tensor_info_at(data: bytes | bytearray, name: str) -> int:
    """Where the tensor info of `name` starts its n_dims field."""
    key = struct.pack("<Q", len(name)) + name.encode()
    return data.index(key) + len(key)


def set_tensor_type(name: str, ttype: int) -> Callable[[bytearray], None]:
    def edit(data: bytearray) -> None:
        at = _tensor_info_at(data, name)
        (n_dims,) = struct.unpack_from("<I", data, at)
        struct.pack_into("<I", data, at + 4 + 8 * n_dims, ttype)
    return edit


def set_string_value(key: str, value: str) -> Callable[[bytearray], None]:
    """Replace a string value by one of the same length (the file keeps its layout)."""
    def edit(data: bytearray) -> None:
        at = data.index(G.string(key)) + len(G.string(key)) + 4
        (n,) = struct.unpack_from("<Q", data, at)
        data[at + 8:at + 8 + n] = value.encode().ljust(n)[:n]
    return edit


def _arch(name: str) -> list[bytes]:
    return [G.kv("general.architecture", VT.STRING, name)]


def _raw_key(key: bytes) -> bytes:
    """A key/value whose key is these bytes (UTF-8 or not), holding a uint32."""
    return G.string(key) + struct.pack("<I", VT.UINT32) + G.value(VT.UINT32, 1)


NOT_UTF8 = b"general.\xff\xfename"


def _truncated(mark: str) -> Callable[[Work], list[str]]:
    def build(w: Work) -> list[str]:
        layout = G.build()
        return ["inspect", w.gguf(layout.data[:layout.marks[mark]])]
    return build


TRUNCATION_MARKS = ("version", "tensor count", "key/value count", "a key's length", "a key's text",
                    "a value's type", "a value", "a tensor's name", "a tensor's dimension count",
                    "a tensor's dimensions", "a tensor's type", "a tensor's offset", "the alignment padding",
                    "the tensor data", "the second tensor's data")


# ---- the corpus --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    command: str  # the quantkit command
    input: str  # what is wrong, in words
    build: Callable[[Work], list[str]] = field(repr=False)  # makes the input; returns the command line
    words: str  # the one-line error must contain these (case-insensitive)
    code: int = 1  # 1: refused; 2: a usage error
    keeps: tuple[str, ...] = ()  # complete outputs a resumable job keeps when a later step fails (folder-relative)

    @property
    def id(self) -> str:
        return f"{self.command}: {self.input}"


def _t(name: str, shape: tuple[int, ...], ttype: int = 0, **kw) -> G.Tensor:
    return G.Tensor(name, shape, ttype, **kw)


GGUF_ROWS = [
    Row("inspect", "an empty file", lambda w: ["inspect", w.gguf(b"")], "is empty"),
    Row("inspect", "random bytes", lambda w: ["inspect", w.gguf(bytes(range(256)) * 16)], "not a GGUF file"),
    Row("inspect", "a text file", lambda w: ["inspect", w.file("notes.txt", "hello\n" * 100)], "not a GGUF file"),
    Row("inspect", "the wrong magic (GGML)", lambda w: ["inspect", w.gguf(G.build(magic=b"GGML"))], "not a GGUF"),
    Row("inspect", "GGUF version 1", lambda w: ["inspect", w.gguf(G.build(version=1))], "version 1"),
    Row("inspect", "an unknown GGUF version (4)", lambda w: ["inspect", w.gguf(G.build(version=4))], "version 4"),
    *[Row("inspect", f"truncated before {mark}", _truncated(mark), "truncated") for mark in TRUNCATION_MARKS],
    Row("inspect", "a header claiming 2^40 tensors",
        lambda w: ["inspect", w.gguf(G.build(n_tensors=2**40))], "1,099,511,627,776 tensors"),
    Row("inspect", "a header claiming 2^40 key/values",
        lambda w: ["inspect", w.gguf(G.build(n_kv=2**40))], "1,099,511,627,776 keys"),
    Row("inspect", "a key whose length runs past the end of the file",
        lambda w: ["inspect", w.gguf(G.build([G.string("general.architecture", 10_000) + b"llama"]))],
        "past the end"),
    Row("inspect", "a string value of 2^60 bytes",
        lambda w: ["inspect", w.gguf(G.build([G.string("general.architecture") + struct.pack("<I", VT.STRING)
                                              + G.string("llama", 2**60)]))], "past the end"),
    Row("inspect", "an array of 2^31 floats in a small file",
        lambda w: ["inspect", w.gguf(G.build([*_arch("llama"), G.kv("x.scores", VT.ARRAY,
                                                                     (VT.FLOAT32, [0.0], 2**31))]))],
        "past the end"),
    Row("inspect", "an array of 2^32 strings in a small file",
        lambda w: ["inspect", w.gguf(G.build([*_arch("llama"), G.kv("x.tokens", VT.ARRAY,
                                                                     (VT.STRING, ["a"], 2**32))]))],
        "past the end"),
    Row("inspect", "arrays nested 10,000 deep",
        lambda w: ["inspect", w.gguf(G.build([*_arch("llama"), G.string("x.deep") + struct.pack("<I", VT.ARRAY)
                                              + struct.pack("<IQ", VT.ARRAY, 1) * 10_000]))], "nested"),
    Row("inspect", "a string of 2^63 bytes inside a string array",
        lambda w: ["inspect", w.gguf(G.build([*_arch("llama"), G.string("x.tokens") + struct.pack("<IIQ", VT.ARRAY,
                                                                                            VT.STRING, 2)
                                              + G.string("a") + G.string("b", 2**63)]))], "past the end"),
    Row("inspect", "an unknown value type (99)",
        lambda w: ["inspect", w.gguf(G.build([*_arch("llama"), G.string("x.odd") + struct.pack("<I", 99)]))],
        "value type 99"),
    Row("inspect", "a tensor with 5 dimensions",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a.weight", (8, 1, 1, 1, 1))]))], "5 dimensions"),
    Row("inspect", "a tensor with no dimensions, of a type with blocks of 32 (Q4_0)",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a.weight", (), 2)], with_data=False).data + b"\0" * 32)],
        "block of 32"),
    Row("inspect", "a dimension of 0",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a.weight", (8, 0))]))], "dimension of 0"),
    Row("inspect", "a dimension of 2^62",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a.weight", (8, 2**62))], with_data=False))],
        "too large"),
    Row("inspect", "a row length that is not a multiple of the type's block (Q4_0, 40)",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a.weight", (40, 1), 2, offset=0)], with_data=False)
                                     .data + b"\0" * 64)], "block"),
    Row("inspect", "a tensor offset past the end of the file",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a.weight", (8,)), _t("b.weight", (8,), offset=2**40)]))],
        "offset"),
    Row("inspect", "a tensor offset that is not aligned",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a.weight", (8,)), _t("b.weight", (8,), offset=33)]))],
        "offset"),
    Row("inspect", "two tensors at the same offset (overlapping)",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a.weight", (8,)), _t("b.weight", (8,), offset=0)]))],
        "offset"),
    Row("inspect", "two tensors with one name",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a.weight", (8,)), _t("a.weight", (8,))]))],
        "two tensors named a.weight"),
    Row("inspect", "a key given twice",
        lambda w: ["inspect", w.gguf(G.build([*_arch("llama"), *_arch("qwen2")]))],
        "general.architecture twice"),
    Row("inspect", "a key that is not UTF-8",
        lambda w: ["inspect", w.gguf(G.build([*_arch("llama"), _raw_key(NOT_UTF8)]))], "key at byte 69 is not UTF-8"),
    Row("inspect", "an empty key",
        lambda w: ["inspect", w.gguf(G.build([*_arch("llama"), _raw_key(b"")]))], "key at byte 69 is empty"),
    Row("inspect", "a tensor name of 64 bytes (ggml allows 63)",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a" * 64, (8,))]))], "64 bytes long"),
    Row("inspect", "an unknown tensor type (250)",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a.weight", (8,), 250)], with_data=False))], "type 250"),
    Row("inspect", "a tensor type ggml removed (Q4_2)",
        lambda w: ["inspect", w.gguf(G.build(tensors=[_t("a.weight", (32,), 4)], with_data=False))], "type 4"),
    Row("inspect", "an alignment of 0",
        lambda w: ["inspect", w.gguf(G.build([*_arch("llama"), G.kv("general.alignment", VT.UINT32, 0)]))],
        "alignment"),
    Row("inspect", "an alignment that is not a power of two (48)",
        lambda w: ["inspect", w.gguf(G.build([*_arch("llama"), G.kv("general.alignment", VT.UINT32, 48)],
                                             alignment=48))], "alignment"),
    Row("inspect", "an alignment given as a string",
        lambda w: ["inspect", w.gguf(G.build([*_arch("llama"), G.kv("general.alignment", VT.STRING, "32")]))],
        "alignment"),
    Row("inspect", "a path that does not exist", lambda w: ["inspect", str(w.dir / "nope.gguf")], "does not exist"),
    Row("inspect", "a folder", lambda w: ["inspect", str(w.dir)], "is a folder"),
    Row("inspect", "no path at all", lambda w: ["inspect"], "missing argument", 2),
    # the same files through the other commands that read GGUFs
    Row("export", "a truncated model",
        lambda w: ["export", w.gguf(w.good.model.read_bytes()[:-4096]), str(w.dir / "out")], "truncated"),
    Row("export", "an architecture quantkit does not export (gpt2)",
        lambda w: ["export", w.gguf(G.build(_arch("gpt2"))), str(w.dir / "out")], "architecture 'gpt2'"),
    Row("export", "an unknown --dtype",
        lambda w: ["export", str(w.good.model), str(w.dir / "out"), "--dtype", "int8"], "unknown dtype"),
    Row("export", "an output path under a regular file",
        lambda w: ["export", str(w.good.model), w.file("file", "x") + "/out"], "is not a folder"),
    Row("export", "a non-empty output folder without --force",
        lambda w: ["export", str(w.good.model), str(Path(w.file("out/keep.txt", "mine")).parent)], "not empty"),
    Row("export", "a read-only output folder",
        lambda w: ["export", str(w.good.model), w.mount("ro", "1m", readonly=True) + "/out"], "read-only"),
    Row("export", "an output folder on a full disk",
        lambda w: ["export", str(w.good.model), w.mount("full", "256k", fill=True) + "/out"], "disk space"),
    Row("estimate-memory", "an empty .gguf", lambda w: ["estimate-memory", w.gguf(b"")], "is empty"),
    Row("estimate-memory", "a GGUF claiming 2^40 tensors",
        lambda w: ["estimate-memory", w.gguf(G.build(n_tensors=2**40))], "tensors"),
    Row("estimate-memory", "a GGUF with a key that is not UTF-8",
        lambda w: ["estimate-memory", w.gguf(G.build([*_arch("llama"), _raw_key(NOT_UTF8)]))], "not UTF-8"),
    Row("perplexity", "a file that is not a GGUF",
        lambda w: ["perplexity", w.file("m.gguf", "hello"), "--dataset", "python-docs", *CPU], "not a GGUF"),
    Row("chat", "a truncated model",
        lambda w: ["chat", w.gguf(w.good.model.read_bytes()[:100_000]), "-p", "hi", *CPU], "truncated"),
    Row("chat", "an architecture libllama does not know",
        lambda w: ["chat", w.model(set_string_value("general.architecture", "lxama")), "-p", "hi", *CPU],
        "unknown model architecture"),
    Row("bench", "random bytes", lambda w: ["bench", w.gguf(os.urandom(1000)), *CPU], "not a GGUF"),
    Row("bench", "a tensor of a type the file's header does not allow (250)",
        lambda w: ["bench", w.model(set_tensor_type("output_norm.weight", 250)), *CPU], "type 250"),
    Row("eval", "a model that is not a GGUF",
        lambda w: ["eval", w.file("m.gguf", "x" * 100), "--limit", "1", *CPU], "not a GGUF"),
    Row("serve", "a model that does not exist", lambda w: ["serve", str(w.dir / "nope.gguf"), *CPU], "does not exist"),
    Row("serve", "a model that is not a GGUF", lambda w: ["serve", w.gguf(b"\0" * 64), *CPU], "not a GGUF"),
    Row("serve", "a folder that holds no GGUF", lambda w: ["serve", w.folder("empty"), *CPU], "holds no GGUF"),
    Row("serve", "several models, one of them not a GGUF",
        lambda w: ["serve", str(w.good.model), w.gguf(b"\0" * 64, "junk.gguf"), *CPU], "not a GGUF"),
    Row("serve", "--ray with several models",
        lambda w: ["serve", str(w.good.model), w.folder("more"), "--ray", "local", "--port", "9"],
        "--ray serves one model"),
    Row("serve", "a --max-memory that is not a size",
        lambda w: ["serve", str(w.good.model), w.folder("others"), "--max-memory", "lots", *CPU], "--max-memory"),
]

_ST = "model__safetensors"  # Work.checkpoint's spelling of model.safetensors


def _first(h: dict) -> dict:
    return h[next(k for k in h if k != "__metadata__")]


def _two(h: dict) -> tuple[dict, dict]:
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
    return h[names[0]], h[names[1]]


def _overlap(h: dict) -> None:
    a, b = _two(h)
    b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + b["data_offsets"][1] - b["data_offsets"][0]]


def _convert(w: Work, **files) -> list[str]:
    return ["convert", w.checkpoint(**files), "-o", str(w.dir / "out")]


CHECKPOINT_ROWS = [
    Row("convert", "a safetensors header length past the end of the file",
        lambda w: _convert(w, **{_ST: w.safetensors(length=10**9)}), "does not fit"),
    Row("convert", "a safetensors header length of 2^63",
        lambda w: _convert(w, **{_ST: w.safetensors(length=2**63)}), "does not fit"),
    Row("convert", "a safetensors header that is not JSON",
        lambda w: _convert(w, **{_ST: w.safetensors(header=b"{not json" + b" " * 40)}), "not valid JSON"),
    Row("convert", "a safetensors header that is a JSON list",
        lambda w: _convert(w, **{_ST: w.safetensors(header=b"[1, 2, 3]")}), "not a JSON object"),
    Row("convert", "a file shorter than a safetensors header",
        lambda w: _convert(w, **{_ST: b"\1\2\3"}), "shorter than"),
    Row("convert", "an unknown safetensors dtype (F8_E4M3)",
        lambda w: _convert(w, **{_ST: w.safetensors(lambda h: _first(h).update(dtype="F8_E4M3"))}), "F8_E4M3"),
    Row("convert", "a safetensors dtype that is not a string",
        lambda w: _convert(w, **{_ST: w.safetensors(lambda h: _first(h).update(dtype=["BF16"]))}), "malformed"),
    Row("convert", "a shape × dtype that differs from the byte span",
        lambda w: _convert(w, **{_ST: w.safetensors(lambda h: _first(h).update(shape=[3, 5]))}),
        "does not fit its shape"),
    Row("convert", "a negative shape that matches a reversed span",
        lambda w: _convert(w, **{_ST: w.safetensors(lambda h: _first(h).update(
            shape=[-1, 1], data_offsets=[_first(h)["data_offsets"][0] + 2, _first(h)["data_offsets"][0]]))}),
        "malformed"),
    Row("convert", "a safetensors shape that holds text",
        lambda w: _convert(w, **{_ST: w.safetensors(lambda h: _first(h).update(shape=["64", 8]))}), "malformed"),
    Row("convert", "a safetensors dimension of 2^64",
        lambda w: _convert(w, **{_ST: w.safetensors(lambda h: _first(h).update(shape=[2**64, 1]))}),
        "does not fit its shape"),
    Row("convert", "one byte span claimed by two tensor names",
        lambda w: _convert(w, **{_ST: w.safetensors(lambda h: h.update({"twin": dict(_first(h))}))}), "overlaps"),
    Row("convert", "a shape of 2^40 × 2^40 (its byte count overflows int64)",
        lambda w: _convert(w, **{_ST: w.safetensors(lambda h: _first(h).update(shape=[2**40, 2**40]))}),
        "does not fit its shape"),
    Row("convert", "two safetensors tensors that overlap", lambda w: _convert(w, **{_ST: w.safetensors(_overlap)}),
        "overlap"),
    Row("convert", "a safetensors offset past the end of the file",
        lambda w: _convert(w, **{_ST: w.safetensors(lambda h: _first(h).update(
            data_offsets=[2**40, 2**40 + _first(h)["data_offsets"][1] - _first(h)["data_offsets"][0]]))}),
        "does not fit"),
    Row("convert", "an index that names a missing shard",
        lambda w: _convert(w, **{"model__safetensors__index__json": {"weight_map": {"a": "model-00002.safetensors"}}}),
        "model-00002.safetensors"),
    Row("convert", "an index that names a shard outside the folder",
        lambda w: _convert(w, **{"model__safetensors__index__json": {"weight_map": {"a": "../model.safetensors"}}}),
        "outside"),
    Row("convert", "an index that is not JSON",
        lambda w: _convert(w, **{"model__safetensors__index__json": "{"}), "not a valid safetensors index"),
    Row("convert", "only pickle weights (pytorch_model.bin)",
        lambda w: _convert(w, **{_ST: None, "pytorch_model__bin": b"\x80\x02pickle"}), "pickle"),
    Row("convert", "no weights at all", lambda w: _convert(w, **{_ST: None}), "no .safetensors"),
    Row("convert", "no config.json", lambda w: _convert(w, config__json=None), "no config.json"),
    Row("convert", "a config.json that is not JSON", lambda w: _convert(w, config__json="{'a': 1"),
        "not valid JSON"),
    Row("convert", "a config.json that is a list", lambda w: _convert(w, config__json=[1, 2]), "JSON object"),
    Row("convert", "a config.json with a layer count that is text",
        lambda w: _convert(w, config__json=w.config(num_hidden_layers="two")), "num_hidden_layers"),
    Row("convert", "a config.json with a hidden size of 0",
        lambda w: _convert(w, config__json=w.config(hidden_size=0)), "non-positive"),
    Row("convert", "an architecture quantkit does not convert (GPT2LMHeadModel)",
        lambda w: _convert(w, config__json=w.config(architectures=["GPT2LMHeadModel"])), "GPT2LMHeadModel"),
    Row("convert", "architectures given as a string, not a list",
        lambda w: _convert(w, config__json=w.config(architectures="LlamaForCausalLM")), "architectures"),
    Row("convert", "no tokenizer.json", lambda w: _convert(w, tokenizer__json=None), "no tokenizer.json"),
    Row("convert", "a tokenizer.json that is not JSON", lambda w: _convert(w, tokenizer__json="{"),
        "not valid JSON"),
    Row("convert", "a tokenizer.json that is not BPE",
        lambda w: _convert(w, tokenizer__json=w.tokenizer(lambda t: t["model"].update(type="Unigram"))),
        "not a byte-level BPE"),
    Row("convert", "a tokenizer.json without merges",
        lambda w: _convert(w, tokenizer__json=w.tokenizer(lambda t: t["model"].pop("merges"))), "no BPE merges"),
    Row("convert", "a tokenizer.json whose added tokens lack their text",
        lambda w: _convert(w, tokenizer__json=w.tokenizer(lambda t: t["added_tokens"][0].pop("content"))),
        "added token"),
    Row("convert", "a pre-tokenizer neither quantkit nor llama.cpp's converter knows",
        lambda w: _convert(w, tokenizer__json=w.tokenizer(lambda t: t.update(pre_tokenizer={
            "type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}))),
        "neither quantkit nor llama.cpp"),
    Row("convert", "a tokenizer_config.json that is not JSON",
        lambda w: _convert(w, tokenizer_config__json="nope"), "not valid JSON"),
    Row("convert", "a source path that is a file", lambda w: ["convert", w.file("x.txt", "x"), "-o", "out"],
        "not a checkpoint folder"),
    Row("convert", "a source that does not exist", lambda w: ["convert", "./nope", "-o", "out"], "neither a folder"),
    Row("convert", "a Hub repo that is not in the cache, offline",
        lambda w: ["convert", "nobody-here/no-such-model", "-o", "out"], "local Hugging Face cache"),
    Row("convert", "an unknown quant type (-t Q9_K)",
        lambda w: ["convert", str(w.good.checkpoint), "-t", "Q9_K", "-o", "out"], "unknown quant type 'Q9_K'"),
    Row("convert", "an unknown --outtype",
        lambda w: ["convert", str(w.good.checkpoint), "--outtype", "Q4_K", "-o", "out"], "unknown --outtype"),
    Row("convert", "a type that needs an importance matrix, without one",
        lambda w: ["convert", str(w.good.checkpoint), "-t", "IQ2_XS", "-o", "out"], "importance matrix"),
    Row("convert", "an output folder under a regular file",
        lambda w: ["convert", str(w.good.checkpoint), "-o", w.file("file", "x") + "/out"], "not a folder"),
    Row("convert", "a read-only output folder",
        lambda w: ["convert", str(w.good.checkpoint), "-o", w.mount("ro", "1m", readonly=True) + "/out"],
        "read-only"),
    Row("convert", "an output folder on a full disk",
        lambda w: ["convert", str(w.good.checkpoint), "-o", w.mount("full", "256k", fill=True)], "disk"),
    Row("estimate-memory", "a model folder whose config.json has text for sizes",
        lambda w: ["estimate-memory", w.checkpoint(config__json=w.config(hidden_size="big"))], "hidden_size"),
]

OTHER_ROWS = [
    Row("estimate-memory", "an unknown size label (13B)", lambda w: ["estimate-memory", "13B"], "13B"),
    Row("estimate-memory", "an unknown quant type", lambda w: ["estimate-memory", "7B", "-t", "Q7_K"],
        "unknown quant type"),
    Row("estimate-memory", "a context of 0", lambda w: ["estimate-memory", "7B", "--ctx", "0"], "context size 0"),
    Row("estimate-memory", "an unknown KV cache type", lambda w: ["estimate-memory", "7B", "--kv-type", "q5_9"],
        "q5_9"),
    Row("estimate-memory", "--gpus that are not numbers", lambda w: ["estimate-memory", "7B", "--gpus", "24,lots"],
        "not a list of GiB"),
    Row("estimate-memory", "a negative --vram", lambda w: ["estimate-memory", "7B", "--vram", "-1"], "positive"),
    Row("estimate-memory", "a URL nobody answers",
        lambda w: ["estimate-memory", "http://127.0.0.1:9/model.gguf"], "cannot reach"),
    Row("quantize", "an IQ type without an importance matrix",
        lambda w: ["quantize", str(w.good.model), "-t", "IQ2_XS", "-o", str(w.dir / "q")], "importance matrix"),
    Row("quantize", "no type and no budget", lambda w: ["quantize", str(w.good.model), "-o", str(w.dir / "q")],
        "nothing to make"),
    Row("quantize", "--calibrate with a dataset that has no calibration text",
        lambda w: ["quantize", str(w.good.model), "--target-bpw", "6", "--calibrate", "nonsense", "-o",
                   str(w.dir / "q")], "no calibration text is paired"),
    Row("quantize", "a base that is not a GGUF",
        lambda w: ["quantize", w.file("base.gguf", "hello\n" * 50), "-t", "Q4_0", "-o", str(w.dir / "q")],
        "not a GGUF file"),
    Row("card", "a folder without a run's report", lambda w: ["card", w.folder("out")], "no report.json"),
    Row("push", "a folder without a card", lambda w: ["push", w.folder("out"), "someone/model", "--dry-run"],
        "no README.md"),
    Row("push", "a folder that does not exist", lambda w: ["push", str(w.dir / "none"), "someone/model"],
        "not a folder"),
    Row("ollama", "a file that is not a GGUF", lambda w: ["ollama", w.file("m.gguf", "hello\n" * 50)],
        "not a GGUF file"),
    Row("ollama", "a model that does not exist", lambda w: ["ollama", str(w.dir / "none.gguf")], "does not exist"),
    Row("perplexity", "an --rpc that is not HOST:PORT",
        lambda w: ["perplexity", str(w.good.model), "--rpc", "gpu-box", *CPU], "is not HOST:PORT"),
    Row("chat", "--rpc on a llama.cpp built without RPC",
        lambda w: ["chat", str(w.good.model), "--prompt", "hi", "--rpc", "127.0.0.1:50052", *CPU], "no RPC backend"),
    Row("serve", "--ray with --port 0", lambda w: ["serve", str(w.good.model), "--ray", "local", "--port", "0"],
        "fixed --port"),
    Row("perplexity", "a text too short for the context",
        lambda w: ["perplexity", str(w.good.model), "--text-file", w.file("t.txt", "Too short."), "--ctx", "64",
                   *CPU], "tokens long"),
    Row("perplexity", "a --text-file that does not exist",
        lambda w: ["perplexity", str(w.good.model), "--text-file", str(w.dir / "none.txt"), *CPU], "none.txt"),
    Row("perplexity", "a --text-file that is a folder",
        lambda w: ["perplexity", str(w.good.model), "--text-file", str(w.dir), *CPU], "is not a file"),
    Row("perplexity", "an unknown --dataset",
        lambda w: ["perplexity", str(w.good.model), "--dataset", "shakespeare", *CPU], "shakespeare"),
    Row("perplexity", "a context larger than the model's training context",
        lambda w: ["perplexity", str(w.good.model), "--dataset", "python-docs", "--ctx", "1000000", *CPU],
        "training context"),
    Row("perplexity", "a context of 2", lambda w: ["perplexity", str(w.good.model), "--ctx", "2", *CPU], "--ctx", 2),
    Row("perplexity", "--n-gpu-layers that is not a number",
        lambda w: ["perplexity", str(w.good.model), "--dataset", "python-docs", "-ngl", "lots", *THREADS],
        "--n-gpu-layers"),
    Row("perplexity", "a negative --n-gpu-layers",
        lambda w: ["perplexity", str(w.good.model), "--dataset", "python-docs", "-ngl", "-3", *THREADS],
        "--n-gpu-layers"),
    Row("chat", "--n-predict 0", lambda w: ["chat", str(w.good.model), "-p", "hi", "-n", "0", *CPU], "--n-predict"),
    Row("chat", "a context of 0", lambda w: ["chat", str(w.good.model), "-p", "hi", "--ctx", "0", *CPU], "--ctx", 2),
    Row("chat", "--threads 0", lambda w: ["chat", str(w.good.model), "-p", "hi", "--threads", "0"], "--threads", 2),
    Row("chat", "an empty stdin and no --prompt", lambda w: ["chat", str(w.good.model), *CPU], "stdin is empty"),
    Row("chat", "a size label whose GGUF was never made", lambda w: ["chat", "7B", "-t", "Q4_K_M", "-p", "hi"],
        "no Q4_K_M GGUF"),
    Row("chat", "a model that is a folder", lambda w: ["chat", str(w.dir), "-p", "hi", *CPU], "is a folder"),
    Row("bench", "--threads -1", lambda w: ["bench", str(w.good.model), "--threads", "-1"], "--threads", 2),
    Row("bench", "--n-gpu-layers that is not a number",
        lambda w: ["bench", str(w.good.model), "-ngl", "half", *THREADS], "--n-gpu-layers"),
    Row("bench", "no repetitions", lambda w: ["bench", str(w.good.model), "-r", "0", *CPU], "repetitions"),
    Row("bench", "a negative prompt length", lambda w: ["bench", str(w.good.model), "-p", "-5", *CPU], "-p -5"),
    Row("run", "a recipe name nobody shipped", lambda w: ["run", "no-such-recipe"], "no recipe named"),
    Row("run", "a recipe path that does not exist", lambda w: ["run", str(w.dir / "nope.toml")], "does not exist"),
    Row("run", "a recipe that is not TOML", lambda w: ["run", w.file("r.toml", "source = [")], "not valid TOML"),
    Row("run", "a recipe with an unknown key",
        lambda w: ["run", w.recipe('colour = "blue"\n' + GOOD_RECIPE)], "unknown key 'colour' ("),
    Row("run", "a recipe with an unknown key in a table",
        lambda w: ["run", w.recipe(GOOD_RECIPE + "speed = 3\n")], "unknown key 'speed' in [perplexity]"),
    Row("run", "a recipe whose ladder holds an unknown type",
        lambda w: ["run", w.recipe(GOOD_RECIPE.replace('"Q8_0"', '"Q8_1"'))], "unknown quant type"),
    Row("run", "a recipe with text for a number",
        lambda w: ["run", w.recipe(GOOD_RECIPE.replace("ctx = 64", 'ctx = "64"'))], "must be an integer"),
    Row("run", "a recipe with a context of 0",
        lambda w: ["run", w.recipe(GOOD_RECIPE.replace("ctx = 64", "ctx = 0"))], "at least 1"),
    Row("run", "a recipe without a source", lambda w: ["run", w.file("r.toml", 'ladder = ["Q8_0"]\n')],
        "no source"),
    Row("run", "a recipe whose source folder does not exist",
        lambda w: ["run", w.file("r.toml", 'source = "./nothing"\nladder = ["Q8_0"]\n'), "-o", "out", *CPU],
        "neither a folder"),
    Row("run", "a recipe whose checkpoint lacks its tokenizer",
        lambda w: ["run", w.file("r.toml", GOOD_RECIPE.format(checkpoint=w.checkpoint(tokenizer__json=None))),
                   "-o", "out", *CPU], "no tokenizer.json", keeps=("out/steps/source.json",)),
    Row("run", "a recipe target that is not a size",
        lambda w: ["run", w.recipe(GOOD_RECIPE.replace('ladder = ["Q8_0"]', 'ladder = ["Q8_0"]\ntargets = ["big"]'))],
        "targets: target 'big' is not a size"),
    Row("run", "a recipe with a negative reasoning budget",
        lambda w: ["run", w.recipe(GOOD_RECIPE + "[eval]\nbudgets = [256, -1]\n")], "[eval] budgets must be"),
    Row("run", "a recipe with an unknown loop guard",
        lambda w: ["run", w.recipe(GOOD_RECIPE + '[eval]\nloop_guard = "maybe"\n')], "[eval] loop_guard must be"),
    Row("run", "a recipe whose [chat] names a draft and spec = \"ngram\"",
        lambda w: ["run", w.recipe(GOOD_RECIPE + '[chat]\nspec = "ngram"\ndraft = "org/small"\n')],
        "[chat] has both spec and draft"),
    Row("run", "a recipe with an unknown key beside its [eval] draft",
        lambda w: ["run", w.recipe(GOOD_RECIPE + '[eval]\ndraft = "org/small"\ndraft_quant = "Q4_0"\n')],
        "unknown key 'draft_quant' in [eval]"),
    Row("run", "a recipe whose draft_type needs an importance matrix",
        lambda w: ["run", w.recipe(GOOD_RECIPE + '[chat]\ndraft = "org/small"\ndraft_type = "IQ2_XS"\n')],
        "[chat] draft_type must be one quant type"),
    Row("run", "a recipe whose draft_type is unknown",
        lambda w: ["run", w.recipe(GOOD_RECIPE + '[chat]\ndraft = "org/small"\ndraft_type = "Q4_9"\n')],
        "[chat] draft_type: unknown quant type"),
    Row("run", "a recipe whose .gguf draft does not exist",
        lambda w: ["run", w.recipe(GOOD_RECIPE + '[eval]\ndraft = "small.gguf"\n')],
        "[eval] draft small.gguf does not exist"),
    Row("run", "a recipe with an unknown spec",
        lambda w: ["run", w.recipe(GOOD_RECIPE + '[chat]\nspec = "eagle"\n')], "[chat] spec must be ngram"),
    Row("run", "an unknown step in --only", lambda w: ["run", w.recipe(), "--only", "bake", "-o", "out"], "bake"),
    Row("run", "--threads 0", lambda w: ["run", w.recipe(), "--threads", "0"], "--threads", 2),
    Row("recipes", "an unknown option", lambda w: ["recipes", "--all"], "no such option", 2),
    Row("eval", "an unknown task", lambda w: ["eval", str(w.good.model), "--task", "nope", *CPU], "unknown task"),
    Row("eval", "a task file without a problem column",
        lambda w: ["eval", str(w.good.model), "--task-file", w.file("t.jsonl", '{"question": "1+1?", "answer": "2"}\n'),
                   *CPU], "problem"),
    Row("eval", "a task file with an empty answer",
        lambda w: ["eval", str(w.good.model), "--task-file", w.file("t.jsonl", '{"problem": "1+1?", "answer": ""}\n'),
                   *CPU], "answer"),
    Row("eval", "a task file that does not exist",
        lambda w: ["eval", str(w.good.model), "--task-file", str(w.dir / "t.jsonl"), *CPU], "t.jsonl"),
    Row("eval", "a task file of an unknown kind",
        lambda w: ["eval", str(w.good.model), "--task-file", w.file("t.xml", "<a/>"), *CPU], "t.xml"),
    Row("eval", "a top-p of 2", lambda w: ["eval", str(w.good.model), "--top-p", "2", "--limit", "1", *CPU],
        "--top-p"),
    Row("eval", "no samples per problem", lambda w: ["eval", str(w.good.model), "-k", "0", "--limit", "1", *CPU],
        "samples"),
    Row("eval", "a reasoning budget that is not a number",
        lambda w: ["eval", str(w.good.model), "--reasoning-budget", "256,lots", "--limit", "1", *CPU],
        "--reasoning-budget takes thought tokens"),
    Row("eval", "a negative reasoning budget among several",
        lambda w: ["eval", str(w.good.model), "--reasoning-budget", "256,-1", "--limit", "1", *CPU],
        "--reasoning-budget must be ≥ 0"),
    Row("eval", "an endpoint nobody answers",
        lambda w: ["eval", "m", "--endpoint", "http://127.0.0.1:9/v1", "--limit", "1", "-o", "e"], "cannot reach"),
    Row("serve", "a port past 65535", lambda w: ["serve", str(w.good.model), "--port", "70000"], "--port", 2),
    Row("serve", "an API key file that does not exist",
        lambda w: ["serve", str(w.good.model), "--api-key-file", str(w.dir / "key"), *CPU], "key"),
    Row("serve", "an empty API key file",
        lambda w: ["serve", str(w.good.model), "--api-key-file", w.file("key", "\n"), *CPU], "holds no API key"),
    Row("serve", "an unknown --reasoning-format",
        lambda w: ["serve", str(w.good.model), "--reasoning-format", "xml", *CPU], "reasoning-format"),
    Row("chat", "a negative --reasoning-budget",
        lambda w: ["chat", str(w.good.model), "-p", "hi", "--reasoning-budget", "-1", *CPU], "--reasoning-budget"),
    Row("chat", "an unknown --loop-guard",
        lambda w: ["chat", str(w.good.model), "-p", "hi", "--loop-guard", "maybe", *CPU], "--loop-guard", 2),
    Row("serve", "a negative --reasoning-budget",
        lambda w: ["serve", str(w.good.model), "--reasoning-budget", "-5", *CPU], "--reasoning-budget"),
    Row("serve", "--reasoning-effort-budgets without three budgets",
        lambda w: ["serve", str(w.good.model), "--reasoning-effort-budgets", "1024,4096", *CPU],
        "--reasoning-effort-budgets"),
    Row("serve", "a negative budget in --reasoning-effort-budgets",
        lambda w: ["serve", str(w.good.model), "--reasoning-effort-budgets", "1024,-1,4096", *CPU],
        "--reasoning-effort-budgets"),
    Row("eval", "a negative --reasoning-budget",
        lambda w: ["eval", str(w.good.model), "--reasoning-budget", "-1", "--limit", "1", *CPU],
        "--reasoning-budget"),
    Row("imatrix", "a calibration text too short for one chunk",
        lambda w: ["imatrix", str(w.good.model), "--text-file", w.file("t.txt", "Too short."), "--ctx", "64",
                   "-o", "i.gguf", *CPU], "needs 64"),
    Row("imatrix", "a dataset with no calibration text paired",
        lambda w: ["imatrix", str(w.good.model), "--dataset", "shakespeare", "-o", "i.gguf", *CPU], "shakespeare"),
    Row("imatrix", "a model that is not a GGUF",
        lambda w: ["imatrix", w.file("m.gguf", "hello"), "--dataset", "python-docs", "-o", "i.gguf", *CPU],
        "not a GGUF"),
    Row("imatrix", "a context below 16", lambda w: ["imatrix", str(w.good.model), "--ctx", "8", *CPU], "--ctx", 2),
    Row("chat", "a draft model of another tokenizer",
        lambda w: ["chat", str(w.good.model), "-p", "hi", "--draft", _qwen_vocab_model(w), *CPU], "cannot draft for"),
    Row("serve", "a draft model that does not exist",
        lambda w: ["serve", str(w.good.model), "--draft", str(w.dir / "nope.gguf"), *CPU], "does not exist"),
    Row("eval", "--spec with --endpoint",
        lambda w: ["eval", "m", "--endpoint", "http://127.0.0.1:9/v1", "--spec", "ngram", "--limit", "1"],
        "not an --endpoint"),
    Row("bench", "--draft-min above --draft-max",
        lambda w: ["bench", str(w.good.model), "--spec", "ngram", "--draft-max", "2", "--draft-min", "3", *CPU],
        "--draft-min"),
    Row("estimate-memory", "a --draft that is not a GGUF",
        lambda w: ["estimate-memory", "7B", "--draft", w.file("d.gguf", "hello\n" * 50)], "the draft: "),
    Row("estimate-memory", "an empty --draft .gguf", lambda w: ["estimate-memory", "7B", "--draft", w.gguf(b"", "d.gguf")],
        "the draft: "),
    Row("estimate-memory", "a --draft that does not exist",
        lambda w: ["estimate-memory", "7B", "--draft", str(w.dir / "none.gguf")], "the draft: unknown model"),
    # rows for commands that land later go here, one line each, e.g.
    # Row("quantize", "an unknown quant type", lambda w: ["quantize", str(w.good.model), "-t", "Q9_K"], "unknown quant type"),
]

CORPUS: list[Row] = [*GGUF_ROWS, *CHECKPOINT_ROWS, *OTHER_ROWS]


def _qwen_vocab_model(w: Work) -> str:
    """A tiny qwen2 model on a cut-down Qwen2 vocabulary: a draft whose tokenizer is not the good model's."""
    from .tiny_gguf_models import TinyShape, reduced_vocab_gguf, write_tiny_model

    path = w.dir / "qwen.gguf"
    write_tiny_model(path, "qwen2", reduced_vocab_gguf("qwen2"), TinyShape(n_layer=1))
    return str(path)


def counts() -> Counter:
    return Counter(row.command for row in CORPUS)


# ---- the README section ------------------------------------------------------------------------------------

README_START = "<!-- refusals: generated by `python -m tests._fixtures.bad_inputs`; checked by tests/test_bad_inputs.py -->"
README_END = "<!-- /refusals -->"


def readme_section() -> str:
    by_command = counts()
    lines = [README_START, f"The corpus holds {len(CORPUS)} inputs: "
             + ", ".join(f"{command} {n}" for command, n in sorted(by_command.items())) + ".", "",
             "<details><summary>Every input, and words its one-line error contains</summary>", "",
             "| command | input | the error says |", "|---|---|---|"]
    for row in CORPUS:
        note = " (usage error, exit 2)" if row.code == 2 else ""
        note += "".join(f" (keeps the finished `{k}`)" for k in row.keeps)
        lines.append(f"| {row.command} | {row.input.replace('|', '/')} | `{row.words}`{note} |")
    lines += ["", "</details>", README_END]
    return "\n".join(lines)


if __name__ == "__main__":
    print(readme_section())
