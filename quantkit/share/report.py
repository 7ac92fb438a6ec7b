"""The report of a `quantkit run`: one row per file of the ladder, rendered from `ReportFacts`, which the job
builds from its steps' stored results (job/facts.py) — nothing here measures, estimates or reads a step. PPL, ΔPPL, KLD and same-top come from `perplexity.ladder_table`
(the table `quantkit perplexity` prints), speeds from `bench`, memory and GPU fit from `estimate_memory`.

Files: report.md (for people), report.csv and report.json (for programs), report.png (quality against size,
the Pareto front marked; needs the optional extra `quantkit[plot]`).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_file
from ..files import to_json

log = logging.getLogger(__name__)

GPU_SIZES_GIB = (8, 12, 16, 24, 48, 80)  # the usual cards: 8/12/16/24 GB consumer, 48 GB workstation, 80 GB A100/H100
REPORT_FILES = {"md": "report.md", "csv": "report.csv", "json": "report.json", "png": "report.png"}
PLOT_HINT = "pip install 'quantkit[plot]'"
RULE = ("for each GPU, the rung of the ladder with the lowest mean KLD against the base among those whose every "
        "layer fits on the GPU at the recipe's context (weights, KV cache, compute buffers and the runtime's "
        "overhead, as `quantkit estimate-memory --vram` counts them); the base file itself is the reference and "
        "not a candidate. Without KLD figures: the largest rung that fits.")


@dataclass
class ReportFacts:
    """Everything the report shows, as plain data; built by the job from its step records (job/facts.py)."""

    recipe: dict
    rows: list[dict] = field(default_factory=list)
    perplexity: dict | None = None  # settings and text of the perplexity step
    bench: dict | None = None
    memory: dict | None = None
    recommended: dict[int, str | None] = field(default_factory=dict)
    chat: dict | None = None
    steps: dict[str, float] = field(default_factory=dict)  # step record → seconds it took
    device: str = ""  # where the measurements ran, in one line
    eval: dict | None = None  # task and protocol of the eval step


def recommend(rows: list[dict], gpu_gib: int) -> str | None:
    """The rung for a GPU of `gpu_gib` (see RULE); None when no rung fits it whole."""
    fitting = [r for r in rows if not r["is_base"] and r.get("fits_gib", {}).get(gpu_gib)]
    if not fitting:
        return None
    if all(r.get("mean_kld") is not None for r in fitting):
        return min(fitting, key=lambda r: (r["mean_kld"], r["size_bytes"]))["type"]
    return max(fitting, key=lambda r: r["size_bytes"])["type"]


# ---- writing ------------------------------------------------------------------------------------------------

def write_report(facts: ReportFacts, out_dir: Path) -> dict[str, Path]:
    """Write report.json, .csv, .md, and .png when matplotlib is there; returns what was written."""
    out_dir = Path(out_dir)
    written = {"json": _write_json(facts, out_dir / REPORT_FILES["json"]),
               "csv": _write_csv(facts, out_dir / REPORT_FILES["csv"])}
    png = out_dir / REPORT_FILES["png"]
    if plot(facts, png):
        written["png"] = png
        note = None
    else:
        png.unlink(missing_ok=True)  # an old picture would not show these numbers
        note = (f"No picture: matplotlib is not installed. `{PLOT_HINT}` and run again "
                f"(`quantkit run {facts.recipe['name']} --only report`) to get `{REPORT_FILES['png']}`."
                if not _have_matplotlib() else "No picture yet: there are no perplexity figures to plot.")
    written["md"] = _write_text(out_dir / REPORT_FILES["md"], markdown(facts, note))
    return written


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _write_text(path: Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def as_dict(facts: ReportFacts) -> dict:
    from .. import __version__

    return to_json({"recipe": facts.recipe, "made": time.strftime("%Y-%m-%d %H:%M:%S %z"), "device": facts.device,
                    "quantkit_version": __version__,
                    "perplexity": facts.perplexity, "bench": facts.bench, "memory": facts.memory,
                    "rows": facts.rows, "gpu_sizes_gib": list(GPU_SIZES_GIB),
                    "recommended": {str(g): t for g, t in facts.recommended.items()}, "rule": RULE,
                    "chat": facts.chat, "eval": facts.eval, "steps_seconds": facts.steps})


def _write_json(facts: ReportFacts, path: Path) -> Path:
    return _write_text(path, json.dumps(as_dict(facts), indent=2, ensure_ascii=False) + "\n")


CSV_COLUMNS = ("type", "file", "size_bytes", "bpw", "ppl", "ppl_err", "delta_ppl_pct", "mean_kld", "same_top_pct",
               "pp_tps", "pp_std", "tg_tps", "tg_std", "vram_bytes", "pass_at_1", "pass_low", "pass_high", "delta_pass",
               "delta_pass_low", "delta_pass_high", "thought_tokens", "cut_off_pct", "looped_pct", "pareto", "imatrix",
               "mix_target")


def _write_csv(facts: ReportFacts, path: Path) -> Path:
    import pandas as pd

    records = []
    for row in facts.rows:
        rec = {c: row.get(c) for c in CSV_COLUMNS}
        rec["mix_target"] = (row.get("mix") or {}).get("target")
        rec.update({f"fits_{g}gib": row.get("fits_gib", {}).get(g) for g in GPU_SIZES_GIB})
        records.append(rec)
    with atomic_file(path) as tmp:
        pd.DataFrame(records).to_csv(tmp, index=False)
    return path


def _fmt(value, spec: str, missing: str = "–") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def markdown(facts: ReportFacts, plot_note: str | None) -> str:
    """The report for people; `plot_note` says why there is no picture (None: there is one)."""
    r = facts.recipe
    lines = [f"# {r['description'] or r['name']}: what each quantization costs", "",
             f"Recipe `{r['name']}` ({r['source']}{' @ ' + r['revision'] if r['revision'] else ''}), "
             f"made {time.strftime('%Y-%m-%d %H:%M')} on {facts.device}.", ""]
    lines += _settings_lines(facts)
    lines += _table_lines(facts)
    lines += _mix_lines(facts)
    lines += _budget_lines(facts)
    lines += _gpu_lines(facts)
    lines += ["## Quality against size", ""]
    lines += [plot_note if plot_note else f"![quality against size]({REPORT_FILES['png']})", ""]
    if facts.chat:
        c = facts.chat
        lines += [f"## One answer from {c['type']}", "", f"> {c['prompt']}", "",
                  (c["answer"].strip() or "*(no answer)*"), "",
                  f"*{c['answer_tokens']} answer tokens, {c['reasoning_tokens']} thought tokens, "
                  f"{c['gen_tps']:.1f} tokens/s, stopped: {c['finish_reason']}*", ""]
    return "\n".join(lines)


def _settings_lines(facts: ReportFacts) -> list[str]:
    """One line per measuring step that ran: what it measured and how."""
    sections = ((facts.perplexity, _perplexity_line), (facts.bench, _bench_line), (facts.memory, _memory_line),
                (facts.eval, _eval_line))
    out = [line(settings) for settings, line in sections if settings]
    return out + [""] if out else out


def _perplexity_line(p: dict) -> str:
    return (f"- **Perplexity**: `{p['dataset']}` ({Path(p['text_file']).name}), ctx {p['n_ctx']}, {p['n_chunks']} "
            f"chunks, {p['n_scored']} scored tokens per file; KLD against the base (top-{p['kl_top_k']} tokens kept "
            "per position). ± is the standard error.")


def _bench_line(b: dict) -> str:
    return (f"- **Speed**: {b['pp']} and {b['tg']} tokens/s, mean of {b['repetitions']} runs, {b['threads']} "
            f"threads, {b['n_gpu_layers']} layers on the GPU.")


def _memory_line(m: dict) -> str:
    return (f"- **VRAM**: weights + KV cache ({m['kv_type']}) + compute and output buffers at ctx {m['n_ctx']}, "
            f"flash attention {'on' if m['flash_attn'] else 'off'} (`quantkit estimate-memory`).")


def _eval_line(e: dict) -> str:
    budgets = e.get("budgets")
    if budgets:
        thought = (f", reasoning budgets {', '.join(str(b['reasoning_budget']) for b in budgets)} (the table: the "
                   "largest)")
    else:
        thought = "" if e.get("reasoning_budget") is None else f", reasoning budget {e['reasoning_budget']}"
    return (f"- **Accuracy**: `quantkit eval` on `{e['task']}`, {e['problems']} problems × {e['samples']} "
            f"sample(s), temperature {e['temperature']}, top-p {e['top_p']}, at most {e['max_tokens']} tokens"
            f"{thought}, loop guard {e.get('loop_guard', 'off')}; pass@1 with its 95 % interval, Δ against the "
            "base with the paired 95 % interval.")


def rung_marks(row: dict) -> str:
    """How a rung was made, after its name: ` · mix` for a budget mix, ` · imatrix` when an importance matrix
    was used (the report's, the card's and the table's one spelling)."""
    return (" · mix" if row.get("mix") else "") + (" · imatrix" if row.get("imatrix") else "")


def mix_plan_text(mix: dict) -> str:
    """A mix's plan in one line: its budget and how many tensors got each type."""
    types = ", ".join(f"{t} ×{n}" for t, n in mix["types"].items())
    return f"budget {mix['target']}; tensors {types}"


def _mix_lines(facts: ReportFacts) -> list[str]:
    mixes = [row for row in facts.rows if row.get("mix")]
    if not mixes:
        return []
    lines = ["## Budget mixes", "", "Each tensor's type chosen so that the file fits the budget with the least "
             "measured damage (`quantkit quantize --target-size / --target-bpw`); the bytes are libllama's.", ""]
    for row in mixes:
        imatrix = f"; imatrix `{row['imatrix']}`" if row.get("imatrix") else "; no imatrix"
        lines.append(f"- **{row['type']}** (`{row['file']}`): {mix_plan_text(row['mix'])}{imatrix}")
    return lines + [""]


def _budget_lines(facts: ReportFacts) -> list[str]:
    """pass@1 of every rung at every reasoning budget the eval ran (the budget panel)."""
    budgets = (facts.eval or {}).get("budgets")
    if not budgets:
        return []
    names = [b["reasoning_budget"] for b in budgets]
    head = ["rung", *[f"budget {b}" for b in names]]
    lines = ["## Accuracy against the reasoning budget", "",
             "pass@1 % [95 % interval] (looped % of the samples) at each budget: the thought is closed after that "
             "many tokens and the answer follows.", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * len(names)]
    rungs = [r["type"] for r in budgets[0]["rungs"]]
    for rung in rungs:
        cells = []
        for b in budgets:
            e = next((x for x in b["rungs"] if x["type"] == rung), None)
            cells.append("–" if e is None else f"{100 * e['pass_at_1']:.1f} [{100 * e['pass_low']:.0f}–"
                                                 f"{100 * e['pass_high']:.0f}] ({e['looped_pct']:.0f})")
        lines.append("| " + " | ".join([rung, *cells]) + " |")
    reused = sum(x["reused_samples"] for b in budgets for x in b["rungs"])
    made = sum(x["new_samples"] for b in budgets for x in b["rungs"])
    lines += ["", f"{made} samples generated, {reused} reused from a larger budget (their thought had ended "
                  "before the smaller budget: the same generation)."]
    if all(x["budget_reached_pct"] == 0 for b in budgets for x in b["rungs"]):
        lines.append("No sample's thought reached a budget (a model whose template has no <think> never thinks): "
                     "here the budget changes nothing.")
    return lines + [""]


def _table_lines(facts: ReportFacts) -> list[str]:
    pp = facts.bench["pp"] if facts.bench else "pp"
    tg = facts.bench["tg"] if facts.bench else "tg"
    ctx = f" @ {facts.memory['n_ctx']}" if facts.memory else ""
    accuracy = facts.eval is not None
    head = ["type", "size GiB", "bpw", "PPL", "ΔPPL %", "KLD", "same top %", f"{pp} t/s", f"{tg} t/s",
            f"VRAM GiB{ctx}", *(["pass@1 %", "Δ pass@1"] if accuracy else []), "Pareto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 3) + ":---:|"]
    for row in facts.rows:
        ppl = row.get("ppl")
        cells = [row["type"] + (" (base)" if row["is_base"] else "") + rung_marks(row),
                 _fmt(row["size_bytes"] / 2**30, ".3f"),
                 _fmt(row.get("bpw"), ".2f"),
                 f"{ppl:.4f} ± {row['ppl_err']:.4f}" if ppl is not None else "–",
                 _fmt(row.get("delta_ppl_pct"), "+.2f"), _fmt(row.get("mean_kld"), ".5f"),
                 _fmt(row.get("same_top_pct"), ".2f"), _fmt(row.get("pp_tps"), ".1f"), _fmt(row.get("tg_tps"), ".1f"),
                 _fmt(row["vram_bytes"] / 2**30 if "vram_bytes" in row else None, ".2f"),
                 *(_accuracy_cells(row) if accuracy else []), "★" if row.get("pareto") else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", "★: on the Pareto front of size against KLD (no other file is both smaller and closer "
                        "to the base). mix: a budget mix (its plan below); imatrix: quantized with an importance "
                        "matrix.", ""]


def _accuracy_cells(row: dict) -> list[str]:
    if row.get("pass_at_1") is None:
        return ["–", "–"]
    cells = [f"{100 * row['pass_at_1']:.1f} [{100 * row['pass_low']:.0f}–{100 * row['pass_high']:.0f}]"]
    if row.get("delta_pass") is None:
        return cells + ["base" if row["is_base"] else "–"]
    return cells + [f"{100 * row['delta_pass']:+.1f} [{100 * row['delta_pass_low']:+.0f}, "
                    f"{100 * row['delta_pass_high']:+.0f}]"]


def _gpu_lines(facts: ReportFacts) -> list[str]:
    lines = ["## Which rung for your GPU", "", f"Rule: {RULE}", "", "| GPU | rung | VRAM GiB | KLD |",
             "|---|---|---:|---:|"]
    by_type = {row["type"]: row for row in facts.rows}
    for g in GPU_SIZES_GIB:
        t = facts.recommended.get(g)
        if t is None:
            lines.append(f"| {g} GB | none fits whole{_partial(facts.rows, g)} | – | – |")
            continue
        row = by_type[t]
        lines.append(f"| {g} GB | **{t}** | {_fmt(row.get('vram_bytes', 0) / 2**30, '.2f')} | "
                     f"{_fmt(row.get('mean_kld'), '.5f')} |")
    return lines + [""]


def _partial(rows: list[dict], gpu: int) -> str:
    layers = [(r["gpu_layers_gib"][gpu], r["type"]) for r in rows if not r["is_base"] and "gpu_layers_gib" in r]
    if not layers:
        return ""
    n, t = max(layers)
    return f" (most layers: {t}, {n} offloaded)"


# ---- the picture --------------------------------------------------------------------------------------------

def plot(facts: ReportFacts, path: Path) -> bool:
    """PPL, KLD (and pass@1 when the job evaluated) against file size, one point per file, the Pareto front
    drawn; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no %s (%s)", path.name, PLOT_HINT)
        return False
    rows = [r for r in facts.rows if r.get("ppl") is not None]
    if not rows:
        return False
    panels = [("ppl", "perplexity"), ("mean_kld", "mean KLD against the base")]
    if any(r.get("pass_at_1") is not None for r in facts.rows):
        panels.append(("pass_at_1", f"pass@1 on {facts.eval['task']} (95 % interval)"))
    budgets = (facts.eval or {}).get("budgets")
    fig, axes = plt.subplots(1, len(panels) + bool(budgets), figsize=(5.5 * (len(panels) + bool(budgets)), 4.2))
    ax_ppl, ax_kld = axes[0], axes[1]
    if budgets:
        _budget_panel(axes[-1], budgets, facts.eval["task"])
    for ax, (key, label) in zip(axes, panels):
        pts = [(r["size_bytes"] / 2**30, r[key], r) for r in facts.rows if r.get(key) is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:blue", zorder=3)
        if key == "pass_at_1":
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], fmt="none", ecolor="tab:blue", alpha=0.5,
                        yerr=[[p[1] - p[2]["pass_low"] for p in pts], [p[2]["pass_high"] - p[1] for p in pts]])
        for x, y, r in pts:
            ax.annotate(r["type"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = sorted((p for p in pts if p[2]["pareto"]), key=lambda p: p[0])
        ax.plot([p[0] for p in front], [p[1] for p in front], color="tab:red", lw=1.2, zorder=2,
                label="Pareto front (size vs KLD)")
        ax.set_xlabel("file size (GiB)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_kld.set_yscale("symlog", linthresh=1e-3)
    ax_ppl.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{facts.recipe['description'] or facts.recipe['name']}: quality against size"
                 + (" and reasoning budget" if budgets else ""))
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True


def _budget_panel(ax, budgets: list[dict], task: str) -> None:
    """pass@1 against the reasoning budget, one line per rung, its 95 % interval as error bars."""
    xs = [b["reasoning_budget"] for b in budgets]
    rungs = [r["type"] for r in budgets[0]["rungs"]]
    for i, rung in enumerate(rungs):
        pts = [(x, e) for x, b in zip(xs, budgets) for e in b["rungs"] if e["type"] == rung]
        ys = [e["pass_at_1"] for _, e in pts]
        ax.errorbar([x for x, _ in pts], ys, yerr=[[y - e["pass_low"] for y, (_, e) in zip(ys, pts)],
                                                    [e["pass_high"] - y for y, (_, e) in zip(ys, pts)]],
                    marker="o", capsize=3, lw=1.2, label=rung, alpha=0.85)
    ax.set_xscale("symlog", linthresh=max(1, min((x for x in xs if x), default=1)))
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("reasoning budget (thought tokens)")
    ax.set_ylabel(f"pass@1 on {task} (95 % interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
