"""What the report shows, gathered from the step records of a job into `report.ReportFacts` — plain data, so
that the report renders it without knowing the job (and `quantkit run --json` returns the same figures)."""
from __future__ import annotations

from pathlib import Path

from .recipes import Recipe
from ..share.report import GPU_SIZES_GIB, ReportFacts, recommend
from .state import StepStore, rung_key


def report_facts(recipe: Recipe, store: StepStore, device: str = "") -> ReportFacts:
    """The rows of the base and every rung made so far, with what the other steps measured of each."""
    r = recipe
    facts = ReportFacts(recipe={"name": r.name, "path": str(r.path), "description": r.description,
                                "source": r.source, "revision": r.revision, "outtype": r.outtype,
                                "ladder": list(r.ladder), "targets": [t.describe() for t in r.targets],
                                "imatrix": r.imatrix}, device=device)
    convert = store.result("convert")
    if convert is None:
        return facts
    files = [(convert["base"]["type"], convert["base"])]
    files += [(t, q) for t in r.rungs if (q := store.result(rung_key("quantize", t))) is not None]
    facts.rows = [{"type": t, "file": Path(f["path"]).name, "path": str(f["path"]), "size_bytes": f["n_bytes"],
                   "is_base": i == 0, "imatrix": f.get("imatrix"), "mix": f.get("mix")}
                  for i, (t, f) in enumerate(files)]
    _add_perplexity(facts, store.result("perplexity"))
    _add_bench(facts, {row["type"]: store.result(rung_key("bench", row["type"])) for row in facts.rows}, r)
    _add_memory(facts, {row["type"]: store.result(rung_key("memory", row["type"])) for row in facts.rows})
    _add_eval(facts, store.result("eval"))
    _mark_pareto(facts.rows)
    facts.recommended = {g: recommend(facts.rows, g) for g in GPU_SIZES_GIB}
    for row in facts.rows:
        row["recommended_for_gib"] = [g for g, t in facts.recommended.items() if t == row["type"]]
    facts.chat = store.result("chat")
    for path in sorted(store.folder.glob("*.json")):
        rec = store.record(path.stem)
        if rec is not None:
            facts.steps[path.stem] = rec.get("seconds", 0.0)
    return facts


def chat_rung(facts: ReportFacts) -> str:
    """The rung the job talks to: the one recommended for the smallest GPU that has a recommendation, else the
    smallest rung (it runs on the CPU)."""
    for g in GPU_SIZES_GIB:
        if facts.recommended.get(g):
            return facts.recommended[g]
    rungs = [r for r in facts.rows if not r["is_base"]] or facts.rows
    return min(rungs, key=lambda r: r["size_bytes"])["type"]


def _add_perplexity(facts: ReportFacts, stored: dict | None) -> None:
    from ..measure.kld import KLStats
    from ..measure.perplexity import PerplexityResult, ladder_table

    if stored is None:
        return
    results = [PerplexityResult(**{**d, "kl": KLStats(**d["kl"]) if d.get("kl") else None})
               for d in stored["results"]]
    table = ladder_table(results).to_dict("records")
    by_file = {row["file"]: row for row in table}
    for row in facts.rows:
        p = by_file.get(row["file"])
        if p is not None:
            row.update({k: p[k] for k in ("bpw", "ppl", "ppl_err", "delta_ppl_pct", "mean_kld", "same_top_pct")})
    first = results[0]
    facts.perplexity = {"dataset": stored["dataset"], "text_file": stored["text_file"], "n_ctx": first.n_ctx,
                        "n_chunks": first.n_chunks, "n_scored": first.n_scored,
                        "kl_top_k": next((x.kl.top_k for x in results if x.kl), None)}


def _add_bench(facts: ReportFacts, stored: dict[str, list | None], recipe: Recipe) -> None:
    for row in facts.rows:
        for test in stored.get(row["type"]) or []:
            kind = "pp" if test["test"].startswith("pp") else "tg"
            row[f"{kind}_tps"], row[f"{kind}_std"] = test["mean_tps"], test["std_tps"]
            facts.bench = {"pp": f"pp{recipe.bench.n_prompt}", "tg": f"tg{recipe.bench.n_gen}",
                           "repetitions": recipe.bench.repetitions, "threads": test["threads"],
                           "n_gpu_layers": test["n_gpu_layers"]}


def _add_memory(facts: ReportFacts, stored: dict[str, dict | None]) -> None:
    for row in facts.rows:
        m = stored.get(row["type"])
        if m is None:
            continue
        est = m["estimate"]["types"][0]
        row["vram_bytes"] = est["total_bytes"]
        row["fits_gib"] = {int(g): fit["fits"] for g, fit in m["fits"].items()}
        row["gpu_layers_gib"] = {int(g): fit["n_gpu_layers"] for g, fit in m["fits"].items()}
        facts.memory = {"n_ctx": m["estimate"]["n_ctx"], "kv_type": m["estimate"]["kv_type"],
                        "flash_attn": m["estimate"]["flash_attn"], "n_layer": m["estimate"]["n_layer"]}


def _mark_pareto(rows: list[dict]) -> None:
    """A row is on the front when no other row is as small and as faithful (lower KLD), and better in one."""
    scored = [r for r in rows if r.get("mean_kld") is not None]
    for r in rows:
        r["pareto"] = r in scored and not any(
            o is not r and o["size_bytes"] <= r["size_bytes"] and o["mean_kld"] <= r["mean_kld"]
            and (o["size_bytes"] < r["size_bytes"] or o["mean_kld"] < r["mean_kld"]) for o in scored)


def _add_eval(facts: ReportFacts, stored: dict | None) -> None:
    if stored is None:
        return
    by_file = {row["model"]: row for row in stored["rows"]}
    for row in facts.rows:
        e = by_file.get(row["file"])
        if e is not None:
            row.update({"pass_at_1": e["pass_at_1"], "pass_low": e["pass_low"], "pass_high": e["pass_high"],
                        "delta_pass": e["delta"], "delta_pass_low": e["delta_low"],
                        "delta_pass_high": e["delta_high"], "thought_tokens": e["thought_mean_correct"],
                        "cut_off_pct": e["cut_off_pct"], "looped_pct": e.get("looped_pct")})
    p = stored["protocol"]
    facts.eval = {"task": stored["task"], "problems": stored["problems"], "samples": p["samples"],
                  "max_tokens": p["max_tokens"], "temperature": p["temperature"], "top_p": p["top_p"],
                  "reasoning_budget": p.get("reasoning_budget"), "loop_guard": p.get("loop_guard", "off")}
    if stored.get("budgets"):
        type_of = {row["file"]: row["type"] for row in facts.rows}
        facts.eval["budgets"] = [
            {"reasoning_budget": b["reasoning_budget"],
             "rungs": [{"type": type_of.get(e["model"], e["model"]), **{k: e[k] for k in _BUDGET_KEYS}}
                       for e in b["rows"]]}
            for b in stored["budgets"]]


_BUDGET_KEYS = ("pass_at_1", "pass_low", "pass_high", "looped_pct", "budget_reached_pct", "cut_off_pct",
                "thought_mean_correct", "new_samples", "reused_samples")
