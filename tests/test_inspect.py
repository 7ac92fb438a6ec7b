from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.gguf.info import inspect_gguf
from tests._fixtures.gguf_files import write_tiny_gguf

pytestmark = pytest.mark.slow  # builds or reads a model, or runs llama.cpp

runner = CliRunner()


def test_inspect_smollm2(smollm2_gguf):
    info = inspect_gguf(smollm2_gguf)
    assert info.architecture == "llama"
    assert info.n_layer == 30
    assert info.file_type == "Q4_1"
    assert (info.n_embd, info.n_ff, info.n_head, info.n_head_kv, info.head_dim) == (576, 1536, 9, 3, 64)
    assert info.tokenizer_model == "gpt2" and info.tokenizer_pre == "smollm"
    assert info.has_chat_template
    hist = {t.type: t.count for t in info.tensor_types}
    # 30 layers × 7 matrices in Q4_1, the tied token embedding in Q8_0, 30 × 2 norms + output_norm in F32
    assert hist == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert info.n_tensors == 272
    assert sum(t.n_bytes for t in info.tensor_types) <= info.file_size
    assert info.n_params == sum(t.n_elements for t in info.tensors)


def test_inspect_json_is_one_document(smollm2_gguf):
    result = runner.invoke(app, ["inspect", str(smollm2_gguf), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["file_type"] == "Q4_1"
    assert len(data["tensors"]) == 272
    first = data["tensors"][0]
    assert set(first) == {"name", "type", "shape", "n_elements", "n_bytes"}


def test_inspect_table(smollm2_gguf):
    result = runner.invoke(app, ["inspect", str(smollm2_gguf)])
    assert result.exit_code == 0
    assert "Q4_1" in result.stdout and "smollm" in result.stdout


def test_inspect_unknown_architecture_still_reads(tmp_path):
    info = inspect_gguf(write_tiny_gguf(tmp_path / "m.gguf", arch="mamba"))
    assert info.architecture == "mamba"
    assert info.n_tensors == 1
