"""`tokenizer.ggml.pre`: every name quantkit can write is one libllama's vocabulary loader accepts; for tiny
checkpoints with each pre-tokenizer shape a tokenizer.json has (GPT-2's plain ByteLevel, SmolLM's Digits +
ByteLevel, Llama-3's and Qwen2's Split, R1-Qwen's with a BOS) quantkit's name is llama.cpp's converter's
(convert_hf_to_gguf.py from the sdist), and libllama loads the converted file; a tokenizer neither knows is
refused before anything is written; a file libllama cannot read is never renamed into place."""
from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest

from quantkit.convert import convert_checkpoint
from quantkit.convert.pretokenizers import CHECK_HASHES, CHECK_TEXT, PRE_TOKENIZERS
from quantkit.convert.vocab import check_hash, pre_of_regexes
from quantkit.errors import RuntimeLoadError, UnknownPreTokenizerError
from quantkit.gguf.reader import field, open_gguf
from quantkit.runtime import load_vocabulary
from reference.cache import cached_dir
from tests._fixtures.reference import reference_gguf
from reference.sdist import llama_cpp_source, vocab_gguf
from reference.tiny import tiny_checkpoint

pytestmark = pytest.mark.slow

SHAPES = ["gpt2", "smollm", "llama", "qwen2-plain", "qwen2"]  # qwen2: the R1-Distill-Qwen tokenizer (BOS added)
EXPECTED = {"gpt2": "gpt-2", "smollm": "smollm", "llama": "llama-bpe", "qwen2-plain": "qwen2",
            "qwen2": "deepseek-r1-qwen"}


def _reference_table() -> tuple[str, dict[str, str]]:
    """convert_hf_to_gguf.py's check text and its hash → name table, read from the sdist's source."""
    source = (llama_cpp_source() / "conversion" / "base.py").read_text()
    text = ast.literal_eval(re.search(r"^\s*chktxt = (.*)$", source, re.M)[1])
    table = dict(re.findall(r'chkhsh == "([0-9a-f]{64})":\s*\n\s*#[^\n]*\n\s*res = "([^"]+)"', source))
    assert len(table) > 50  # the whole table was read
    return text, table


def _vocab_with_pre(name: str) -> Path:
    """ggml-vocab-gpt-2.gguf with `tokenizer.ggml.pre` set to `name`."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    def build(tmp: Path) -> None:
        reader = gguf.GGUFReader(vocab_gguf("gpt-2"))
        writer = gguf.GGUFWriter(tmp / "vocab.gguf", reader.get_field("general.architecture").contents())
        copy_with_new_metadata(reader, writer, {"tokenizer.ggml.pre": MetadataDetails(gguf.GGUFValueType.STRING, name)},
                               [])

    return cached_dir(f"vocab-pre-{name}-v1", build) / "vocab.gguf"


def test_the_check_text_and_hashes_are_llama_cpps():
    text, table = _reference_table()
    assert CHECK_TEXT == text
    assert {h: table.get(h) for h in CHECK_HASHES} == CHECK_HASHES


@pytest.mark.parametrize("name", sorted(set(PRE_TOKENIZERS) | set(CHECK_HASHES.values())))
def test_every_name_quantkit_writes_loads_in_libllama(name):
    with load_vocabulary(_vocab_with_pre(name)) as vocab:
        assert vocab.n_vocab == 50257


def test_libllama_refuses_a_name_it_does_not_know():
    """The control for the test above: the loader does check the name ('gpt2' is what quantkit wrote before)."""
    with pytest.raises(RuntimeLoadError, match="unknown pre-tokenizer type: 'gpt2'"):
        load_vocabulary(_vocab_with_pre("gpt2"))


@pytest.mark.parametrize("shape", SHAPES)
def test_pre_is_the_reference_converters_and_libllama_loads_the_file(shape, tmp_path):
    checkpoint = tiny_checkpoint(shape)
    reference = field(open_gguf(reference_gguf(checkpoint, f"{shape}-v1", "f16", vocab_only=True)),
                      "tokenizer.ggml.pre")
    convert_checkpoint(checkpoint, tmp_path / "ours.gguf", "F16")
    ours = field(open_gguf(tmp_path / "ours.gguf"), "tokenizer.ggml.pre")

    assert reference == EXPECTED[shape]  # the fixture has the shape it claims
    assert ours == reference
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    assert pre_of_regexes(tokenizer, config) == reference  # the regex table agrees with the hash where both know
    with load_vocabulary(tmp_path / "ours.gguf") as vocab:
        assert vocab.n_vocab == json.loads((checkpoint / "config.json").read_text())["vocab_size"]


def _copy(checkpoint: Path, dest: Path, tokenizer: dict) -> Path:
    shutil.copytree(checkpoint, dest, ignore=shutil.ignore_patterns("tokenizer.json", ".complete"))
    (dest / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    return dest


def test_a_gpt2_style_tokenizer_with_its_own_vocabulary_is_gpt_2(tmp_path):
    """The issue's case: a plain ByteLevel pre-tokenizer over a vocabulary llama.cpp's table does not know (two
    tokens swapped, so the check hash is new): named by its regexes, 'gpt-2', and libllama loads it."""
    checkpoint = tiny_checkpoint("gpt2")
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["Ġtea"], vocab["Ġcoffee"] = vocab["Ġcoffee"], vocab["Ġtea"]  # "tea" is in the check text
    folder = _copy(checkpoint, tmp_path / "ckpt", tokenizer)
    assert check_hash((folder / "tokenizer.json").read_text()) not in CHECK_HASHES

    convert_checkpoint(folder, tmp_path / "ours.gguf", "F16")
    assert field(open_gguf(tmp_path / "ours.gguf"), "tokenizer.ggml.pre") == "gpt-2"
    with load_vocabulary(tmp_path / "ours.gguf"):
        pass


def test_a_tokenizer_neither_knows_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import quantkit.convert as convert_module

    monkeypatch.setattr(convert_module, "write_gguf", lambda *args, **kwargs: pytest.fail("the GGUF was started"))
    checkpoint = tiny_checkpoint("gpt2")
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    tokenizer["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\s+"}, "behavior": "Isolated", "invert": False},
        {**tokenizer["pre_tokenizer"], "use_regex": False}]}
    folder = _copy(checkpoint, tmp_path / "ckpt", tokenizer)
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(UnknownPreTokenizerError) as caught:
        convert_checkpoint(folder, out / "ours.gguf", "F16")
    assert "\n" not in str(caught.value) and "neither" in str(caught.value) and caught.value.hint
    assert list(out.iterdir()) == []


def test_a_file_libllama_cannot_read_is_not_renamed_into_place(tmp_path, monkeypatch):
    """As quantkit wrote before this check: a name libllama refuses. The file never takes its name."""
    import quantkit.convert.vocab as vocab_module

    monkeypatch.setattr(vocab_module, "pre_of", lambda *args: "gpt2")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeLoadError, match="unknown pre-tokenizer type: 'gpt2'") as caught:
        convert_checkpoint(tiny_checkpoint("gpt2"), out / "ours.gguf", "F16")
    assert "ours.gguf" in str(caught.value) and "partial" not in str(caught.value)
    assert list(out.iterdir()) == []


def test_the_check_hash_from_the_child_process_is_the_one_computed_here(monkeypatch):
    """read_hf_vocab's check hash comes from a child Python process (the tokenizers library's parse holds the GIL);
    it equals check_hash's in this process, the parent computes it itself when the child fails, and a child
    left unwanted (the `with` left early) is killed and reaped."""
    import os

    import quantkit.convert.vocab as vocab_module
    from quantkit.convert.vocab import ChildCheckHash

    path = tiny_checkpoint("qwen2") / "tokenizer.json"
    text = path.read_text(encoding="utf-8")
    here = check_hash(text)
    assert here in CHECK_HASHES
    with ChildCheckHash(path) as hashing:
        assert hashing._child is not None
        assert hashing.result(text) == here

    monkeypatch.setattr(vocab_module, "_CHILD", "import sys; sys.exit(1)")
    with ChildCheckHash(path) as hashing:
        assert hashing.result(text) == here  # computed in this process

    monkeypatch.setattr(vocab_module, "_CHILD", "import time; time.sleep(60)")
    with ChildCheckHash(path) as hashing:
        pid = hashing._child.pid
    with pytest.raises(ProcessLookupError):  # killed and waited for: not even a zombie left
        os.kill(pid, 0)


def test_a_tokenizer_json_the_library_cannot_read_is_named_by_its_regexes_through_the_child(tmp_path, caplog):
    """The child exits 3 with the library's complaint: no hash, the warning in this process, the regexes name it."""
    from quantkit.convert.vocab import ChildCheckHash

    tokenizer = json.loads((tiny_checkpoint("qwen2") / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["model"]["merges"] = [["not", "in", "pairs"]]  # the library refuses merges that are not pairs
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tokenizer), encoding="utf-8")
    assert check_hash(path.read_text(encoding="utf-8")) is None
    caplog.clear()
    with ChildCheckHash(path) as hashing:
        assert hashing.result(path.read_text(encoding="utf-8")) is None
    assert "cannot read tokenizer.json" in caplog.text
