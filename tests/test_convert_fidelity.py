"""Our converter against llama.cpp's own (convert_hf_to_gguf.py from the llama-cpp-python 0.3.36 sdist) on the
same checkpoints: same tensors (names, shapes, types, bytes) and the same metadata values."""
from __future__ import annotations

from pathlib import Path

import pytest

from quantkit.convert import convert_checkpoint
from quantkit.gguf.reader import field, open_gguf
from tests._fixtures.gguf_tensors import tensor_table
from tests._fixtures.reference import reference_gguf
from reference.tiny import tiny_checkpoint

pytestmark = pytest.mark.slow

# Set by gguf's Metadata from the folder name; the same for both converters here, but not what llama.cpp runs on.
_NAMING_KEYS = {"general.name", "general.basename", "general.version", "general.size_label", "general.finetune"}


def _smollm2() -> Path:
    from quantkit.convert.embedded import embedded_checkpoint

    return embedded_checkpoint()


CASES = [(family, outtype) for family in ("qwen2", "llama") for outtype in ("F32", "F16", "BF16", "Q8_0")]
CASES += [("smollm2", "F16"), ("smollm2", "Q8_0")]


def _checkpoint(family: str) -> Path:
    return _smollm2() if family == "smollm2" else tiny_checkpoint(family)


@pytest.mark.parametrize(("family", "outtype"), CASES)
def test_same_tensors_as_llama_cpp(family, outtype, tmp_path):
    checkpoint = _checkpoint(family)
    ref = tensor_table(reference_gguf(checkpoint, f"{family}-v1", outtype.lower()))
    convert_checkpoint(checkpoint, tmp_path / "ours.gguf", outtype)
    ours = tensor_table(tmp_path / "ours.gguf")

    assert sorted(ours) == sorted(ref)
    for name, (qtype, dims, data) in ref.items():
        assert ours[name][:2] == (qtype, dims), name
        assert ours[name][2] == data, f"{name} differs"


@pytest.mark.parametrize(("family", "outtype"), [("qwen2", "BF16"), ("llama", "Q8_0"), ("smollm2", "F16")])
def test_same_metadata_as_llama_cpp(family, outtype, tmp_path):
    """Every key the reference writes, with the same value (tokens, types, merges, special ids, template, pre,
    shapes, rope, file type), and no key of ours that it lacks."""
    checkpoint = _checkpoint(family)
    ref = open_gguf(reference_gguf(checkpoint, f"{family}-v1", outtype.lower()))
    convert_checkpoint(checkpoint, tmp_path / "ours.gguf", outtype)
    ours = open_gguf(tmp_path / "ours.gguf")

    keys = {k for k in ref.fields if not k.startswith("GGUF.")} | {k for k in ours.fields if not k.startswith("GGUF.")}
    assert len(keys) > 25
    for key in sorted(keys - _NAMING_KEYS):
        assert field(ours, key) == field(ref, key), key


def test_pre_tokenizer_is_detected_not_assumed():
    """The tokenizer names its pre-tokenizer: the R1 Qwen tokenizer (BOS added) is deepseek-r1-qwen; the same
    regexes without the R1 BOS are plain qwen2."""
    import json

    from quantkit.convert.vocab import detect_pre

    folder = tiny_checkpoint("qwen2")
    tok = json.loads((folder / "tokenizer.json").read_text())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert detect_pre(tok, config) == "deepseek-r1-qwen"
    tok["post_processor"] = {"type": "ByteLevel"}
    assert detect_pre(tok, {**config, "add_bos_token": False, "bos_token": None}) == "qwen2"
    llama = tiny_checkpoint("llama")
    assert detect_pre(json.loads((llama / "tokenizer.json").read_text()), {}) == "llama-bpe"
