"""`quantkit bench` on SmolLM2 with tiny settings, and its clean failures."""
from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from quantkit.measure.bench import bench
from quantkit.cli.app import app
from tests.test_bad_inputs import assert_clean_failure

runner = CliRunner()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(smollm2_gguf):
    result = runner.invoke(app, ["bench", str(smollm2_gguf), "-p", "64", "-n", "16", "-r", "2", "--threads", "1",
                                 "--n-gpu-layers", "0", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_rows(tiny_run, smollm2_gguf):
    assert [r["test"] for r in tiny_run] == ["pp64", "tg16"]
    for row in tiny_run:
        assert row["model"] == smollm2_gguf.name and row["file_type"] == "Q4_1"
        assert row["threads"] == 1 and row["n_gpu_layers"] == 0
        assert len(row["samples_tps"]) == 2
        assert all(s > 0 for s in row["samples_tps"])
        mean = sum(row["samples_tps"]) / 2
        assert row["mean_tps"] == pytest.approx(mean)
        assert row["std_tps"] == pytest.approx(abs(row["samples_tps"][0] - row["samples_tps"][1]) / 2 ** 0.5)


def test_rates_are_tokens_over_the_runs_wall_time(smollm2_gguf, monkeypatch):
    """tokens/s of a run is its tokens over its wall time, not a count, a time or a per-token latency: with a
    clock that advances 0.25 s a reading, every run takes 0.25 s. (How fast it is: benchmarks/bench.py.)"""
    readings = itertools.count()
    clock = SimpleNamespace(perf_counter_ns=lambda: next(readings) * 250_000_000)
    monkeypatch.setattr("quantkit.measure.bench.time", clock)
    results = bench([smollm2_gguf], n_prompt=8, n_gen=4, repetitions=2, threads=1, n_gpu_layers=0)
    assert [(r.test, r.n_tokens, r.samples_tps) for r in results] == [("pp8", 8, [32.0, 32.0]),
                                                                       ("tg4", 4, [16.0, 16.0])]
    assert all(r.mean_tps == r.samples_tps[0] and r.std_tps == 0 for r in results)


def test_library_skips_empty_tests(smollm2_gguf):
    results = bench([smollm2_gguf], n_prompt=0, n_gen=4, repetitions=1, threads=1, n_gpu_layers=0)
    assert [r.test for r in results] == ["tg4"] and results[0].n_tokens == 4


def test_csv(smollm2_gguf):
    result = runner.invoke(app, ["bench", str(smollm2_gguf), "-p", "32", "-n", "0", "-r", "1", "--threads", "1",
                                 "--n-gpu-layers", "0", "--csv"])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.strip().splitlines()
    assert header.split(",")[:4] == ["model", "file_type", "size_bytes", "test"]
    assert row.split(",")[3] == "pp32" and float(row.split(",")[-2]) > 0


def test_table(smollm2_gguf):
    result = runner.invoke(app, ["bench", str(smollm2_gguf), "-p", "0", "-n", "4", "-r", "1", "--threads", "1",
                                 "--n-gpu-layers", "0"])
    assert result.exit_code == 0, result.output
    assert "tg4" in result.stdout and "±" in result.stdout and "pp" not in result.stdout


def test_not_gguf(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello\n" * 10)
    assert_clean_failure(["bench", str(bad)], "not a GGUF file")


def test_second_file_bad_fails_before_measuring(smollm2_gguf, tmp_path):
    assert_clean_failure(["bench", str(smollm2_gguf), str(tmp_path / "missing.gguf")], "does not exist")


def test_zero_repetitions(smollm2_gguf):
    assert_clean_failure(["bench", str(smollm2_gguf), "-r", "0"], "--repetitions must be ≥ 1")


def test_nothing_to_measure(smollm2_gguf):
    assert_clean_failure(["bench", str(smollm2_gguf), "-p", "0", "-n", "0"], "nothing to measure")
