"""`quantkit perplexity` from the command line: the table, CSV and JSON, and bad inputs as one clean line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from tests._fixtures.texts import english_text
from tests._fixtures.tiny_llama import tiny_llama
from tests.test_bad_inputs import assert_clean_failure

pytestmark = pytest.mark.slow  # builds or reads a model, or runs llama.cpp

runner = CliRunner()


@pytest.fixture(scope="module")
def text_file() -> Path:
    return english_text()


def test_ladder_table_csv_json(tmp_path, text_file):
    base, noisy = tiny_llama("base"), tiny_llama("noisy")
    csv = tmp_path / "ladder.csv"
    args = ["perplexity", str(base), str(noisy), "--text-file", str(text_file), "--ctx", "32", "--chunks", "2",
            "--threads", "2", "--csv", str(csv), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["results"]
    assert [Path(r["path"]).name for r in rows] == [base.name, noisy.name]
    assert rows[0]["kl"] is None and rows[1]["kl"]["mean_kld"] > 0
    assert rows[0]["n_scored"] == 2 * 15
    import pandas as pd

    table = pd.read_csv(csv)
    assert list(table["type"]) == ["F16", "F16"]
    assert table["ppl"][1] == pytest.approx(rows[1]["ppl"])
    assert table["delta_ppl_pct"][0] == 0.0


def test_text_too_short(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("A few words only.\n")
    err = assert_clean_failure(["perplexity", str(tiny_llama("base")), "--text-file", str(short), "--ctx", "64"],
                               "needs at least 128")
    assert "tokens long" in err


def test_ctx_larger_than_training(text_file):
    assert_clean_failure(["perplexity", str(tiny_llama("base")), "--text-file", str(text_file), "--ctx", "512"],
                         "training context of 256")


def test_not_gguf(tmp_path, text_file):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a model at all" * 10)
    assert_clean_failure(["perplexity", str(bad), "--text-file", str(text_file)], "not a GGUF file")


def test_kl_base_other_vocabulary(tmp_path, smollm2_gguf, text_file):
    csv = tmp_path / "out.csv"
    assert_clean_failure(["perplexity", str(tiny_llama("base")), "--kl-base", str(smollm2_gguf), "--text-file",
                          str(text_file), "--ctx", "64", "--csv", str(csv)], "different vocabularies")
    assert not csv.exists() and list(tmp_path.iterdir()) == []


def test_offline_without_cache_says_text_file(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing answers
    assert_clean_failure(["perplexity", str(tiny_llama("base"))], "--text-file")
