"""`--imatrix auto` / `auto:DATASET` on convert, quantize and recipes goes through one function, which hands the
base and the scored dataset to imatrix_for_base (its caching and numbers are tested in test_imatrix.py)."""
from __future__ import annotations

from pathlib import Path

import quantkit.imatrix as imatrix_pkg
from quantkit.quantize.ladder import resolve_imatrix


def test_a_path_is_kept_and_auto_computes_from_the_base(monkeypatch, tmp_path):
    calls = []

    def fake(base, *, dataset, threads):
        calls.append((Path(base), dataset, threads))
        return tmp_path / "computed.gguf"

    monkeypatch.setattr(imatrix_pkg, "imatrix_for_base", fake)
    given = tmp_path / "mine.gguf"
    assert resolve_imatrix(given, tmp_path / "base.gguf") == given
    assert resolve_imatrix(None, tmp_path / "base.gguf") is None
    assert resolve_imatrix(Path("auto"), tmp_path / "base.gguf", threads=2) == tmp_path / "computed.gguf"
    assert resolve_imatrix("auto:python-docs", tmp_path / "base.gguf") == tmp_path / "computed.gguf"
    assert calls == [(tmp_path / "base.gguf", "wikitext-2", 2), (tmp_path / "base.gguf", "python-docs", None)]


def test_a_recipe_with_auto_needs_no_file(tmp_path):
    from quantkit.job.recipes import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('source = "embedded:smollm2"\nladder = ["IQ3_XXS"]\nimatrix = "auto"\n'
                      '[perplexity]\ndataset = "python-docs-heldout"\n')
    r = load_recipe(recipe)
    assert r.imatrix_auto and r.imatrix_path is None
