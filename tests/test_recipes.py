"""Recipes: the shipped ones load and name the right models; a bad recipe is one clean line and exit code 1."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.errors import RecipeError, RecipeNotFoundError
from quantkit.models import R1_DISTILLS
from quantkit.job.recipes import available_recipes, find_recipe, load_recipe
from tests._fixtures.run_recipe import TINY_RECIPE, write_recipe
from tests.test_bad_inputs import assert_clean_failure

runner = CliRunner()


def test_shipped_recipes():
    recipes = {p.stem: load_recipe(p) for p in available_recipes()}
    assert "smollm2" in recipes and len(recipes) == 7
    r1 = [r for r in recipes.values() if r.embedded is None]
    assert sorted(r.source for r in r1) == sorted(m.repo_id for m in R1_DISTILLS)
    for r in r1:
        assert r.revision == "main" and r.outtype == "BF16" and "Q4_K_M" in r.ladder
        assert r.perplexity.dataset == "wikitext-2"
    smol = recipes["smollm2"]
    assert smol.embedded == "smollm2" and smol.perplexity.dataset == "python-docs"


def test_found_by_name_size_label_and_path(tmp_path):
    assert find_recipe("smollm2").name == "smollm2.toml"
    assert load_recipe("7B").source == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert load_recipe(write_recipe(tmp_path)).ladder == ("Q4_0", "Q8_0")
    with pytest.raises(RecipeNotFoundError, match="no recipe named 'nope'"):
        find_recipe("nope")


def test_recipes_command_json():
    result = runner.invoke(app, ["recipes", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == sorted(r["name"] for r in rows)
    smol = next(r for r in rows if r["name"] == "smollm2")
    assert smol["source"] == "embedded:smollm2" and smol["perplexity"]["dataset"] == "python-docs"


def test_recipes_command_table():
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0 and "smollm2" in result.stdout


BAD = {
    "unknown key": (TINY_RECIPE.replace('outtype = "F16"', 'outtype = "F16"\nquant = "Q4_0"'), "unknown key 'quant'"),
    "unknown key in a table": (TINY_RECIPE.replace("ctx = 128", "ctx = 128\ncontext = 64"),
                               "unknown key 'context' in [perplexity]"),
    "unknown table": (TINY_RECIPE + "\n[server]\nport = 1\n", "unknown key 'server'"),
    "unknown type": (TINY_RECIPE.replace('"Q8_0"]', '"Q9_K"]'), "unknown quant type 'Q9_K'"),
    "missing source": (TINY_RECIPE.replace('source = "embedded:smollm2"\n', ""), "no source"),
    "wrong kind": (TINY_RECIPE.replace("chunks = 4", 'chunks = "four"'), "[perplexity] chunks must be an integer"),
    "base type in ladder": (TINY_RECIPE.replace('"Q8_0"]', '"F16"]'), "ladder holds F16"),
    "imatrix type": (TINY_RECIPE.replace('"Q8_0"]', '"IQ2_XS"]'), "need(s) an importance matrix"),
    "unknown dataset": (TINY_RECIPE.replace('"python-docs"', '"wikitext-103"'), "unknown [perplexity] dataset"),
    "unknown embedded": (TINY_RECIPE.replace("embedded:smollm2", "embedded:gpt2"), "unknown embedded model"),
    "not toml": ("ladder = [", "not valid TOML"),
    "negative budget": (TINY_RECIPE.replace("[eval]\n", "[eval]\nreasoning_budget = -1\n"), "[eval] reasoning_budget must be at least 0"),
    "unknown loop guard": (TINY_RECIPE.replace("[eval]\n", '[eval]\nloop_guard = "maybe"\n'), "[eval] loop_guard must be one of"),
}


def test_eval_budget_and_loop_guard(tmp_path):
    text = TINY_RECIPE.replace("[eval]\n", '[eval]\nreasoning_budget = 0\nloop_guard = "end"\n')
    recipe = load_recipe(write_recipe(tmp_path, text))
    assert (recipe.eval.reasoning_budget, recipe.eval.loop_guard) == (0, "end")
    assert load_recipe(write_recipe(tmp_path)).eval.reasoning_budget is None


@pytest.mark.parametrize("case", BAD)
def test_bad_recipe_is_one_line(tmp_path, case):
    text, expect = BAD[case]
    path = write_recipe(tmp_path, text)
    err = assert_clean_failure(["run", str(path), "--out", str(tmp_path / "out")], expect)
    assert "tiny.toml" in err
    assert not (tmp_path / "out").exists()  # checked before anything is made
    with pytest.raises(RecipeError):
        load_recipe(path)


def test_unknown_recipe_and_step(tmp_path):
    assert_clean_failure(["run", "no-such-recipe"], "no recipe named 'no-such-recipe'")
    assert_clean_failure(["run", str(tmp_path / "missing.toml")], "does not exist")
    path = write_recipe(tmp_path)
    assert_clean_failure(["run", str(path), "--out", str(tmp_path / "out"), "--only", "download"], "unknown step")


def test_only_a_later_step_without_the_earlier_ones(tmp_path):
    path = write_recipe(tmp_path)
    assert_clean_failure(["run", str(path), "--out", str(tmp_path / "out"), "--only", "perplexity"],
                         "has not been made yet")


def test_targets_and_budgets(tmp_path):
    text = TINY_RECIPE.replace('ladder = ["Q4_0", "Q8_0"]', 'ladder = ["Q4_0"]\ntargets = ["4.2G", "bpw<=3.5", '
                               '"size<=900MiB"]') + "budgets = [1024, 0, 256]\nloop_guard = \"end\"\n"
    r = load_recipe(write_recipe(tmp_path, text))
    assert [t.describe() for t in r.targets] == ["size<=4200000000", "bpw<=3.5", f"size<={900 * 2**20}"]
    assert r.rungs == ("Q4_0", "MIX-4.2G", "MIX-3.50bpw", "MIX-900MIB")
    assert r.target_of("MIX-3.50bpw").bpw == 3.5 and r.target_of("Q4_0") is None
    assert r.eval.budgets == (0, 256, 1024) and r.eval.loop_guard == "end"
    only_mixes = load_recipe(write_recipe(tmp_path, text.replace('ladder = ["Q4_0"]\n', ""), "mixes"))
    assert only_mixes.ladder == () and only_mixes.rungs == ("MIX-4.2G", "MIX-3.50bpw", "MIX-900MIB")
    for bad, message in ((text.replace('"4.2G"', '"4.2G", "size<=4.2G"'), "holds MIX-4.2G twice"),
                         (text.replace('"bpw<=3.5"', '"bpw<=lots"'), "is not bits per weight"),
                         (text.replace('"bpw<=3.5"', '"bpw<=40"'), "out of range"),
                         (text.replace("budgets = [1024, 0, 256]", "budgets = [256, 256]"), "twice"),
                         (text.replace("budgets = [1024, 0, 256]", "budgets = []"), "budgets must be")):
        with pytest.raises(RecipeError, match=message):
            load_recipe(write_recipe(tmp_path, bad, "bad"))
