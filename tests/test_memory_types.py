"""estimate-memory's per-tensor types and file sizes against what libllama actually does."""
from __future__ import annotations

import re

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader

from quantkit.memory import ALL_TYPES, estimate_memory, weights_plan
from quantkit.memory.shapes import resolve_target
from quantkit.quant_types import IMATRIX_LADDER, file_type
from quantkit.quantize.file import quantize
from quantkit.runtime import model_quantize
from quantkit.runtime import capture as capture_llama_log
from tests._fixtures.memory import FIXTURES, tiny_model

pytestmark = pytest.mark.slow  # builds or reads a model, or runs llama.cpp

_LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[.*\], type =\s+(\w+), size =.*?(?:\((\w+)\))?$")


def libllama_types(src, qtype, tmp_path, imatrix=None, **kw) -> dict[str, str]:
    """The type libllama picks for every tensor, read from its dry-run log (`imatrix`: a dict of importance
    values handed to libllama as they are)."""
    with capture_llama_log() as lines:
        if imatrix is None:
            quantize(src, tmp_path / "dry.gguf", qtype, dry_run=True, **kw)
        else:
            rc, _ = model_quantize(src, tmp_path / "dry.gguf", int(file_type(qtype)), dry_run=True, imatrix=imatrix)
            assert rc == 0
    out = {}
    for line in lines:
        m = _LINE.match(line.strip())
        if m:
            out[m[1]] = (m[3] or m[2]).upper()
    assert out, "no tensor lines in libllama's log"
    return out


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_predicted_types_equal_libllama_dry_run(fixture, tmp_path):
    src = tiny_model(fixture)
    spec = resolve_target(str(src))
    for qtype in ALL_TYPES:
        predicted = {p.name: p.type for p in weights_plan(spec, qtype)}
        actual = libllama_types(src, qtype, tmp_path)
        assert predicted == actual, (fixture, qtype, {k: (predicted[k], actual.get(k)) for k in predicted
                                                      if predicted[k] != actual.get(k)})


def _ones_imatrix(spec) -> dict:
    return {t.name: np.ones(t.shape[0], np.float32) for t in spec.tensors
            if len(t.shape) >= 2 and t.name.startswith("blk.")}


@pytest.mark.parametrize("fixture", ["qwen2-28", "llama-32", "llama-80", "llama-16-tied"])
def test_imatrix_types_equal_libllama_dry_run(fixture, tmp_path):
    """The IQ rungs (and Q2_K_S) with an importance matrix; and the types whose choices change when there is
    none, without one (a dry run does not refuse)."""
    src = tiny_model(fixture)
    spec = resolve_target(str(src))
    imatrix = _ones_imatrix(spec)
    for qtype in IMATRIX_LADDER:
        predicted = {p.name: p.type for p in weights_plan(spec, qtype)}
        actual = libllama_types(src, qtype, tmp_path, imatrix=imatrix)
        assert predicted == actual, (fixture, qtype, {k: (predicted[k], actual.get(k)) for k in predicted
                                                      if predicted[k] != actual.get(k)})
    for qtype, with_imatrix in (("IQ3_XXS", False), ("IQ4_XS", False), ("Q4_0", True), ("Q5_0", True)):
        predicted = {p.name: p.type for p in weights_plan(spec, qtype, has_imatrix=with_imatrix)}
        actual = libllama_types(src, qtype, tmp_path, imatrix=imatrix if with_imatrix else None)
        assert predicted == actual, (fixture, qtype, with_imatrix)


def test_rules_are_exercised(tmp_path):
    """The fixtures do reach the rules they were shaped for (so the comparison above is not vacuous)."""
    def types(fixture, qtype):
        return {p.name: p.type for p in weights_plan(resolve_target(str(tiny_model(fixture))), qtype)}

    assert types("llama-80", "Q3_K_S")["blk.40.attn_v.weight"] == "Q5_K"  # 70B bump
    assert types("llama-80-mha", "Q3_K_S")["blk.40.attn_v.weight"] == "Q3_K"  # 65B: no bump
    assert types("qwen2-28", "Q2_K")["blk.5.attn_v.weight"] == "Q3_K"  # GQA 2
    assert types("llama-32", "Q2_K")["blk.5.attn_v.weight"] == "Q4_K"  # GQA 4
    assert types("qwen2-28", "Q4_K_M")["blk.0.ffn_down.weight"] == "Q8_0"  # Q6_K falls back (n_ff 320)
    assert types("llama-16-tied", "Q4_0")["blk.0.ffn_down.weight"] == "F16"  # n_ff 336: not even Q4_0
    assert types("llama-16-tied", "Q4_K_M")["token_embd.weight"] == "Q6_K"  # tied: output rule
    assert types("qwen2-28", "IQ2_S")["blk.0.ffn_down.weight"] == "IQ4_NL"  # IQ3_S falls back (n_ff 320)
    assert types("llama-32", "IQ2_XXS")["blk.0.attn_v.weight"] == "Q4_K"  # GQA 4
    assert types("qwen2-28", "IQ1_S")["blk.0.attn_output.weight"] == "IQ2_XXS"
    assert types("llama-16-tied", "IQ2_XS")["token_embd.weight"] == "Q5_K"  # tied: output rule
    q4km = types("qwen2-64", "Q4_K_M")
    assert [q4km[f"blk.{i}.attn_v.weight"] for i in (0, 7, 8, 10, 56)] == ["Q6_K", "Q6_K", "Q4_K", "Q6_K", "Q6_K"]


@pytest.mark.parametrize("fixture", ["llama-16-tied", "qwen2-28"])
def test_real_quantized_files_match_prediction(fixture, tmp_path):
    """Quantize for real: every tensor's type and the file size (header included) are as predicted."""
    src = tiny_model(fixture)
    types = ALL_TYPES if fixture == "llama-16-tied" else ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_0", "Q6_K", "F16")
    est = estimate_memory(str(src), list(types), with_tensors=True)
    for row in est.types:
        out = quantize(src, tmp_path / f"{row.type}.gguf", row.type, threads=2)
        reader = GGUFReader(out.path)
        actual = {t.name: t.tensor_type.name for t in reader.tensors}
        assert {p.name: p.type for p in row.tensors} == actual, row.type
        assert row.file_bytes == out.n_bytes == out.path.stat().st_size, row.type
        out.path.unlink()


def test_smollm2_requantized_types(smollm2_gguf, tmp_path):
    """The real SmolLM2 (a Q4_1 file, so libllama needs allow_requantize): tied embeddings, n_embd 576 (not a
    multiple of 256: every k-quant falls back), 30 layers."""
    spec = resolve_target(str(smollm2_gguf))
    for qtype in ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"):
        predicted = {p.name: p.type for p in weights_plan(spec, qtype)}
        assert predicted == libllama_types(smollm2_gguf, qtype, tmp_path, allow_requantize=True), qtype
