"""`quantkit run` end to end on a reduced SmolLM2 recipe: the report holds exactly what the individual commands
report for the same files and settings."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.measure.texts import python_docs_path
from quantkit.share.report import GPU_SIZES_GIB, PLOT_HINT
from tests._fixtures.run_recipe import THREADS, full_run, report_rows, run_args, write_recipe

runner = CliRunner()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run():
    return full_run()


def _cli_json(args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_summary_and_files(run):
    out, summary = run
    assert [s["step"] for s in summary["steps"]] == ["source", "convert", "quantize", "perplexity", "bench",
                                                    "memory", "chat", "eval", "report"]
    assert all(s["status"] == "done" for s in summary["steps"])
    assert [Path(f).name.rsplit("-", 1)[1] for f in summary["files"]] == ["F16.gguf", "Q4_0.gguf", "Q8_0.gguf"]
    assert {"md", "csv", "json"} <= set(summary["report"])
    assert set(summary["recommended"]) == {str(g) for g in GPU_SIZES_GIB}
    assert summary["chat"]["type"] in ("Q4_0", "Q8_0")
    rows = report_rows(out)  # the eval step's pass@1 in every row, the base without a Δ
    assert all(0 <= r["pass_at_1"] <= 1 and r["pass_low"] <= r["pass_at_1"] <= r["pass_high"] for r in rows)
    assert rows[0]["delta_pass"] is None and all(r["delta_pass"] is not None for r in rows[1:])
    assert "pass@1 %" in (out / "report.md").read_text()


def test_perplexity_equals_the_command(run):
    out, summary = run
    rows = report_rows(out)
    cli = _cli_json(["perplexity", *summary["files"], "--text-file", str(python_docs_path()), "--ctx", "128",
                     "--chunks", "4", "--threads", THREADS, "--n-gpu-layers", "0", "--json"])["results"]
    assert [Path(r["path"]).name for r in cli] == [row["file"] for row in rows]
    base = cli[0]["ppl"]
    for row, r in zip(rows, cli):
        assert row["ppl"] == r["ppl"] and row["ppl_err"] == r["ppl_err"]
        assert row["bpw"] == r["bits_per_weight"] and row["size_bytes"] == r["file_size"]
        assert row["delta_ppl_pct"] == pytest.approx(100 * (r["ppl"] / base - 1), rel=1e-12, abs=1e-12)
        if r["kl"] is None:
            assert row["mean_kld"] == 0.0 and row["same_top_pct"] == 100.0
        else:
            assert row["mean_kld"] == r["kl"]["mean_kld"]
            assert row["same_top_pct"] == pytest.approx(100 * r["kl"]["same_top"], rel=1e-12)
    assert rows[2]["mean_kld"] < rows[1]["mean_kld"]  # Q8_0 is closer to the base than Q4_0


def test_memory_equals_the_command(run):
    out, summary = run
    for row, path in zip(report_rows(out), summary["files"]):
        est = _cli_json(["estimate-memory", path, "-t", row["type"], "--ctx", "2048", "--json"])
        assert row["vram_bytes"] == est["types"][0]["total_bytes"]
        fit = _cli_json(["estimate-memory", path, "-t", row["type"], "--ctx", "2048", "--vram", "8", "--json"])
        assert row["fits_gib"]["8"] == fit["types"][0]["fit"]["fits"]


def test_bench_is_the_stored_command_result(run):
    """Speeds are timings: the command gives the same tests and fields; the report copies the stored step."""
    out, summary = run
    rows = report_rows(out)
    cli = _cli_json(["bench", summary["files"][1], "-p", "16", "-n", "4", "-r", "1", "--threads", THREADS,
                     "--n-gpu-layers", "0", "--json"])
    for row in rows:
        stored = json.loads((out / "steps" / f"bench-{row['type']}.json").read_text())["result"]
        assert [t["test"] for t in stored] == [t["test"] for t in cli] == ["pp16", "tg4"]
        assert set(stored[0]) == set(cli[0])
        assert row["pp_tps"] == stored[0]["mean_tps"] and row["tg_tps"] == stored[1]["mean_tps"]
        assert row["pp_std"] == stored[0]["std_tps"]


def test_report_files_agree(run):
    import pandas as pd

    out, summary = run
    rows = report_rows(out)
    table = pd.read_csv(out / "report.csv")
    assert list(table["type"]) == ["F16", "Q4_0", "Q8_0"]
    assert list(table["ppl"]) == [row["ppl"] for row in rows]
    md = (out / "report.md").read_text()
    for row in rows:
        assert f"{row['ppl']:.4f} ± {row['ppl_err']:.4f}" in md
        assert f"{row['mean_kld']:.5f}" in md
    for g in GPU_SIZES_GIB:
        assert f"| {g} GB | **" in md
    assert "Rule:" in md and summary["chat"]["prompt"] in md
    stored_chat = json.loads((out / "steps" / "chat.json").read_text())["result"]
    assert summary["chat"] == stored_chat


def test_recommendation_follows_the_rule(run):
    """Every GPU here holds both rungs whole; the rule takes the lower KLD of the two (the base is no candidate)."""
    out, summary = run
    rows = {row["type"]: row for row in report_rows(out)}
    best = min(("Q4_0", "Q8_0"), key=lambda t: rows[t]["mean_kld"])
    assert set(summary["recommended"].values()) == {best}
    assert summary["chat"]["type"] == best


def test_plot(run):
    """matplotlib is in the test extra: the picture is made, not skipped."""
    out, _ = run
    png = out / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![quality against size](report.png)" in (out / "report.md").read_text()


def test_without_matplotlib_the_report_says_how(run, tmp_path, monkeypatch):
    out, _ = run
    copy = tmp_path / "out"
    import shutil

    shutil.copytree(out / "steps", copy / "steps")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    recipe = write_recipe(tmp_path)
    result = runner.invoke(app, run_args(recipe, copy, "--only", "report"))
    assert result.exit_code == 0, result.output
    assert PLOT_HINT in (copy / "report.md").read_text()
    assert not (copy / "report.png").exists()
    assert report_rows(copy) == report_rows(out)


def test_second_run_keeps_everything(run):
    out, _ = run
    models = sorted((out / "models").glob("*.gguf"))
    before = {p: p.stat().st_mtime_ns for p in models + sorted((out / "steps").glob("*.json"))}
    rows = report_rows(out)
    summary = _cli_json(run_args(out.parent / "tiny.toml", out, "--json"))
    assert {s["step"]: s["status"] for s in summary["steps"]} == {
        "source": "kept", "convert": "kept", "quantize": "kept", "perplexity": "kept", "bench": "kept",
        "memory": "kept", "chat": "kept", "eval": "kept", "report": "done"}
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert report_rows(out) == rows
