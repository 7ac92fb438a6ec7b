"""A recipe with a budget mix (`targets` beside the ladder), an imatrix and reasoning budgets, run end to end on
SmolLM2 by `quantkit run`: the mix is a rung like any other (memory as written, from its own tensors; perplexity,
KLD, bench and eval of its file), the report, the card and `quantkit serve`'s /v1/models say which rung is a mix
(with its plan) and which used an imatrix, and the eval at two budgets makes the budget panel. SmolLM2 never
thinks (its template has no <think>): no thought reaches a budget, so the smaller budget reuses every sample."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.gguf.reader import read_header
from quantkit.memory import AS_WRITTEN, estimate_memory
from tests._fixtures.run_recipe import TINY_RECIPE, run_args, write_recipe

runner = CliRunner()
pytestmark = pytest.mark.slow

RECIPE = (TINY_RECIPE.replace('ladder = ["Q4_0", "Q8_0"]',
                              'ladder = ["Q4_0"]\ntargets = ["bpw<=5.5"]\nimatrix = "auto:python-docs"')
          + "budgets = [4, 12]\n")
MIX = "MIX-5.50bpw"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixrun")
    out = folder / "out"
    result = runner.invoke(app, run_args(write_recipe(folder, RECIPE, "mixed"), out, "--json"))
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_the_mix_is_a_rung_with_its_marks(run):
    out, summary = run
    assert all(s["status"] == "done" for s in summary["steps"])
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [r["type"] for r in rows] == ["F16", "Q4_0", MIX]
    base, q4, mix = rows
    assert (base["imatrix"], base["mix"]) == (None, None)
    assert q4["imatrix"] == mix["imatrix"] and q4["imatrix"].startswith("SmolLM2") and q4["mix"] is None
    written = read_header(mix["path"])
    assert mix["mix"]["target"] == "bpw<=5.5"
    assert mix["mix"]["types"] == dict(Counter(t.type.name for t in written.tensors))
    assert mix["size_bytes"] == Path(mix["path"]).stat().st_size and mix["bpw"] <= 5.5
    assert mix["ppl"] > 0 and mix["mean_kld"] > 0 and mix["pp_tps"] > 0 and mix["pass_at_1"] is not None
    # memory as written: the file's own tensors, at the recipe's context
    est = estimate_memory(mix["path"], [AS_WRITTEN], n_ctx=2048).types[0]
    assert mix["vram_bytes"] == est.total_bytes and est.file_bytes == mix["size_bytes"]

    md = (out / "report.md").read_text()
    assert f"| {MIX} · mix · imatrix |" in md and "| Q4_0 · imatrix |" in md and "| F16 (base) |" in md
    assert "## Budget mixes" in md and f"**{MIX}**" in md and "budget bpw<=5.5; tensors " in md
    card = (out / "README.md").read_text()
    assert f"{MIX} · mix · imatrix" in card and "--target-bpw 5.5 --imatrix auto:python-docs" in card


def test_the_budget_panel(run):
    out, _ = run
    report = json.loads((out / "report.json").read_text())
    budgets = report["eval"]["budgets"]
    assert [b["reasoning_budget"] for b in budgets] == [4, 12]
    small, large = budgets
    assert [r["type"] for r in small["rungs"]] == ["F16", "Q4_0", MIX]
    assert all((r["new_samples"], r["reused_samples"]) == (0, 3) for r in small["rungs"])  # never thinks
    assert all((r["new_samples"], r["reused_samples"]) == (3, 0) for r in large["rungs"])
    assert [r["pass_at_1"] for r in small["rungs"]] == [r["pass_at_1"] for r in large["rungs"]]
    md = (out / "report.md").read_text()
    assert "## Accuracy against the reasoning budget" in md and "| rung | budget 4 | budget 12 |" in md
    assert "9 samples generated, 9 reused" in md and "No sample's thought reached a budget" in md


def test_v1_models_marks_the_mix(run):
    from tests._fixtures.serve import start

    out, _ = run
    mix = json.loads((out / "report.json").read_text())["rows"][2]
    with start(Path(mix["path"]), "--ctx", "256", "--threads", "2") as server:
        entry = server.openai().models.list().data[0].model_dump()
    header = read_header(mix["path"])
    assert entry["quantkit"] == {"file_type": header_type(header), "imatrix": mix["imatrix"],
                                 "mix": {"target": "bpw<=5.5", "types": header.get("quantize.mix.types")}}
    counts = dict(part.split(":") for part in entry["quantkit"]["mix"]["types"].split(","))
    assert all(int(n) <= mix["mix"]["types"][t] for t, n in counts.items())  # the planned tensors, by type


def header_type(header) -> str:
    from quantkit.gguf.reader import file_type_name

    return file_type_name(header.get("general.file_type"))
