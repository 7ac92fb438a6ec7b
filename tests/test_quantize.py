from __future__ import annotations

import pytest
from gguf import LlamaFileType

from quantkit.errors import InvalidArgumentError, QuantizeError
from quantkit.quant_types import LADDER, file_type, needs_imatrix, parse_types
from quantkit.quantize.file import quantize
from tests._fixtures.memory import tiny_model

pytestmark = pytest.mark.slow  # builds or reads a model, or runs llama.cpp


def test_file_type_and_parse():
    assert file_type("q4_k_m") is LlamaFileType.MOSTLY_Q4_K_M
    assert file_type("F32") is LlamaFileType.ALL_F32
    assert parse_types(["Q8_0,q4_k_m", "Q8_0"]) == ["Q8_0", "Q4_K_M"]
    assert parse_types(["all"]) == list(LADDER)
    with pytest.raises(InvalidArgumentError) as e:
        parse_types(["Q4_K_Z"])
    assert "Q4_K_M" in e.value.hint
    assert needs_imatrix("IQ2_XS") and not any(needs_imatrix(t) for t in LADDER)


def test_quantize_writes_atomically(tmp_path):
    src = tiny_model("llama-16-tied")
    result = quantize(src, tmp_path / "out" / "m-Q8_0.gguf", "Q8_0", threads=1)
    assert result.path.stat().st_size == result.n_bytes > 0 and result.type == "Q8_0"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m-Q8_0.gguf"]


def test_requantize_refused_is_typed_and_leaves_nothing(smollm2_gguf, tmp_path):
    with pytest.raises(QuantizeError) as e:
        quantize(smollm2_gguf, tmp_path / "x.gguf", "Q4_K_M", threads=1)
    assert "requantizing" in str(e.value) and "F16" in e.value.hint
    assert list(tmp_path.iterdir()) == []


def test_imatrix_type_without_imatrix(tmp_path):
    with pytest.raises(InvalidArgumentError):
        quantize(tiny_model("llama-16-tied"), tmp_path / "x.gguf", "IQ2_XS")
