"""The model card of a run's folder: a Hugging Face Hub README.md (YAML front matter, then the files with what
was measured of each, the file for each GPU, how they were made and how to run them), built from the report's
plain data (report.json, which `quantkit run` writes from `ReportFacts`) — the card measures nothing, and its
numbers are the report's, formatted the same way.

    write_card(Path("out/smollm2"), repo_id="me/SmolLM2-135M-Instruct-GGUF")   # out/smollm2/README.md
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from .. import __version__
from ..errors import InputNotFoundError, QuantkitError
from ..files import atomic_file
from ..convert.embedded import EMBEDDED_MODELS
from .report import GPU_SIZES_GIB, REPORT_FILES, _accuracy_cells, _fmt, mix_plan_text, rung_marks

log = logging.getLogger(__name__)

CARD = "README.md"
R1_SAMPLING = {"temperature": 0.6, "top_p": 0.95}
# the Hub repo and license of each embedded model (its GGUF says apache-2.0; the checkpoint exported from it
# carries no license, so the base file of a run cannot tell)
_EMBEDDED = {"smollm2": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}


def load_report(out_dir: str | Path) -> dict:
    path = Path(out_dir) / REPORT_FILES["json"]
    if not path.is_file():
        raise InputNotFoundError(f"{out_dir} has no {REPORT_FILES['json']}",
                                 hint=f"run `quantkit run RECIPE --out {out_dir}` first (the card is built from its report)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputNotFoundError(f"{path} is not a readable report ({e})", hint="run the report step again: "
                                 "quantkit run RECIPE --only report") from None


def write_card(out_dir: str | Path, *, repo_id: str | None = None, quantized_by: str | None = None,
               license: str | None = None) -> Path:
    """Write `out_dir`/README.md from `out_dir`/report.json (and the imatrix files found beside the models)."""
    out_dir = Path(out_dir)
    report = load_report(out_dir)
    text = model_card(report, repo_id=repo_id, quantized_by=quantized_by, license=license,
                      imatrices=find_imatrices(out_dir), picture=(out_dir / REPORT_FILES["png"]).is_file())
    dest = out_dir / CARD
    with atomic_file(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return dest


def base_model(recipe: dict) -> str | None:
    """The Hub repo the ladder was made from: the recipe's source when it is a repo id."""
    source = str(recipe.get("source") or "")
    if source.startswith("embedded:"):
        return _EMBEDDED.get(source.removeprefix("embedded:"), (None, None))[0]
    is_repo = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", source) is not None
    return source if is_repo and not Path(source).exists() else None


def find_imatrices(out_dir: Path) -> list[dict]:
    """The importance matrices among the GGUFs of `out_dir` and its models/ folder (general.type = imatrix), with
    the calibration text they name."""
    from ..gguf.header import read_local_header

    found = []
    for path in sorted(p for d in (out_dir, out_dir / "models") for p in d.glob("*.gguf") if not p.name.startswith(".")):
        try:
            header = read_local_header(path)
        except QuantkitError:
            continue
        if header.get("general.type") == "imatrix":
            datasets = _string_list(path, "imatrix.datasets")
            found.append({"file": path.name, "datasets": datasets,
                          "chunks": header.get("imatrix.chunk_count"), "chunk_size": header.get("imatrix.chunk_size")})
    return found


def _string_list(path: Path, key: str) -> list[str]:
    """A string-array key (the fast header parser keeps only their lengths), through gguf's reader: an imatrix
    file is small."""
    from ..gguf.reader import field, open_gguf

    value = field(open_gguf(path), key, [])
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _license(report: dict, given: str | None) -> str:
    if given:
        return given
    from ..gguf.header import read_local_header

    for row in report.get("rows", []):
        path = Path(row.get("path", ""))
        if path.is_file():
            try:
                found = read_local_header(path).get("general.license")
            except QuantkitError:
                continue
            if found:
                return str(found)
    source = str(report["recipe"].get("source") or "")
    return _EMBEDDED.get(source.removeprefix("embedded:"), (None, "other"))[1] or "other"


def model_card(report: dict, *, repo_id: str | None = None, quantized_by: str | None = None,
               license: str | None = None, imatrices: list[dict] | None = None, picture: bool = False) -> str:
    """The README.md text for the report `report` (report.json's data); `picture`: report.png goes with it."""
    recipe = report["recipe"]
    base = base_model(recipe)
    name = recipe.get("description") or recipe["name"]
    repo = repo_id or f"<you>/{(base or recipe['name']).split('/')[-1]}-GGUF"
    imatrices = imatrices or []
    tags = ["gguf", "llama.cpp", "quantkit", "quantized"]
    if "deepseek-r1" in str(recipe.get("source", "")).lower():
        tags.append("deepseek-r1")
    if imatrices or recipe.get("imatrix"):
        tags.append("imatrix")
    front = ["---"]
    if base:
        front += [f"base_model: {base}", "base_model_relation: quantized"]
    front += [f"license: {_license(report, license)}", "tags:", *[f"- {t}" for t in tags],
              f"quantized_by: {quantized_by or 'quantkit'}", "pipeline_tag: text-generation", "---", ""]
    version = report.get("quantkit_version") or __version__
    lines = [f"# {name} — GGUF", "",
             (f"GGUF quantizations of [{base}](https://huggingface.co/{base}) " if base else "GGUF quantizations ")
             + f"made and measured with quantkit {version}. Every number below was measured on these very files "
               f"({report.get('device') or 'see the report'}), not inferred from the nominal bits.", ""]
    lines += _files_table(report)
    lines += _gpu_table(report)
    lines += _measured(report, picture)
    lines += _made(report, version, imatrices)
    lines += _how_to_run(report, repo)
    return "\n".join(front + lines)


def _files_table(report: dict) -> list[str]:
    mem = report.get("memory")
    ctx = f" @ {mem['n_ctx']}" if mem else ""
    accuracy = report.get("eval") is not None
    head = ["file", "type", "size GiB", "bpw", "PPL", "ΔPPL %", "KLD", "same top %",
            *(["pass@1 %", "Δ pass@1"] if accuracy else []), f"VRAM GiB{ctx}"]
    lines = ["## Files", "", "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for row in report["rows"]:
        ppl = row.get("ppl")
        cells = [f"`{row['file']}`", row["type"] + (" (base)" if row["is_base"] else "") + rung_marks(row),
                 _fmt(row["size_bytes"] / 2**30, ".3f"), _fmt(row.get("bpw"), ".2f"),
                 f"{ppl:.4f} ± {row['ppl_err']:.4f}" if ppl is not None else "–",
                 _fmt(row.get("delta_ppl_pct"), "+.2f"), _fmt(row.get("mean_kld"), ".5f"),
                 _fmt(row.get("same_top_pct"), ".2f"), *(_accuracy_cells(row) if accuracy else []),
                 _fmt(row["vram_bytes"] / 2**30 if "vram_bytes" in row else None, ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", "KLD: mean KL-divergence of the next-token distribution against the base file (lower is "
                        "closer); ΔPPL: perplexity against the base's; VRAM: weights, KV cache and buffers with every "
                        "layer on the GPU." + (" mix: a budget mix, each tensor's type planned to fit its budget; "
                                               "imatrix: quantized with an importance matrix."
                                               if any(rung_marks(r) for r in report["rows"]) else ""), ""]


def _gpu_table(report: dict) -> list[str]:
    recommended = report.get("recommended") or {}
    if not any(recommended.values()):
        return []
    by_type = {row["type"]: row for row in report["rows"]}
    lines = ["## Which file for your GPU", "", "| GPU | file | VRAM GiB | KLD |", "|---|---|---:|---:|"]
    for g in report.get("gpu_sizes_gib", GPU_SIZES_GIB):
        t = recommended.get(str(g))
        if t is None:
            lines.append(f"| {g} GB | none fits whole | – | – |")
            continue
        row = by_type[t]
        lines.append(f"| {g} GB | `{row['file']}` ({t}) | {_fmt(row.get('vram_bytes', 0) / 2**30, '.2f')} | "
                     f"{_fmt(row.get('mean_kld'), '.5f')} |")
    return lines + ["", f"Rule: {report.get('rule', '')}", ""]


def _measured(report: dict, picture: bool) -> list[str]:
    out = ["## How it was measured", ""]
    if p := report.get("perplexity"):
        out.append(f"- Perplexity and KLD: `quantkit perplexity` on `{p['dataset']}`, ctx {p['n_ctx']}, "
                   f"{p['n_chunks']} chunks ({p['n_scored']} scored tokens per file), top-{p['kl_top_k']} KLD.")
    if m := report.get("memory"):
        out.append(f"- VRAM: `quantkit estimate-memory` at ctx {m['n_ctx']}, KV cache {m['kv_type']}, flash attention "
                   f"{'on' if m['flash_attn'] else 'off'}.")
    if e := report.get("eval"):
        out.append(f"- Accuracy: `quantkit eval` on `{e['task']}`, {e['problems']} problems × {e['samples']} sample(s), "
                   f"temperature {e['temperature']}, top-p {e['top_p']}, at most {e['max_tokens']} tokens.")
    if picture:
        out.append(f"\n![quality against size]({REPORT_FILES['png']})")
    return out + [""] if len(out) > 2 else []


def _made(report: dict, version: str, imatrices: list[dict]) -> list[str]:
    r = report["recipe"]
    source = r["source"]
    rev = f" --revision {r['revision']}" if r.get("revision") else ""
    imatrix = f" --imatrix {r['imatrix']}" if r.get("imatrix") else ""
    lines = ["## How the files were made", "", f"quantkit {version}, recipe `{r['name']}` (`quantkit run {r['name']}` "
             "makes and measures all of them):", "", "```bash"]
    embedded = EMBEDDED_MODELS.get(source.removeprefix("embedded:")) if source.startswith("embedded:") else None
    if embedded is not None:  # the run exports the embedded GGUF to a checkpoint (f32: exact), then converts that
        source = f"{embedded.name}-hf"
        lines.append(f"quantkit export ~/.cache/quantkit/embedded/{embedded.filename} {source} --dtype f32")
    base_file = report["rows"][0]["file"] if report["rows"] else "BASE.gguf"
    for row in report["rows"]:
        if row["is_base"]:
            lines.append(f"quantkit convert {source}{rev} --outtype {row['type']} -o models   # {row['file']}")
        elif row.get("mix"):
            lines.append(f"quantkit quantize models/{base_file} {_target_flag(row['mix']['target'])}"
                         f"{imatrix if row.get('imatrix') else ''} -o models   # {row['file']}")
        else:
            lines.append(f"quantkit convert {source}{rev} -t {row['type']}{imatrix} -o models   # {row['file']}")
    lines += ["```", ""]
    mixes = [row for row in report["rows"] if row.get("mix")]
    if mixes:
        lines += ["Budget mixes:", ""] + [f"- `{row['file']}`: {mix_plan_text(row['mix'])}" for row in mixes] + [""]
    if imatrices:
        lines += ["Importance matrix:", ""]
        for m in imatrices:
            texts = ", ".join(f"`{d}`" for d in m["datasets"]) or "not recorded"
            lines.append(f"- `{m['file']}`: calibration text {texts}, {m['chunks']} chunks of {m['chunk_size']} tokens")
        lines.append("")
    elif r.get("imatrix"):
        lines += [f"Importance matrix: `{r['imatrix']}`.", ""]
    return lines


def _target_flag(target: str) -> str:
    """`size<=N` / `bpw<=X` (quantize.mixes.Target.describe) as the quantize flag that asks for it."""
    kind, _, value = target.partition("<=")
    return f"--target-bpw {value}" if kind == "bpw" else f"--target-size {value}"


def _how_to_run(report: dict, repo: str) -> list[str]:
    rows = [r for r in report["rows"] if not r["is_base"]] or report["rows"]
    pick = next((t for g in report.get("gpu_sizes_gib", GPU_SIZES_GIB)
                 if (t := (report.get("recommended") or {}).get(str(g)))), rows[0]["type"])
    file = next(r["file"] for r in report["rows"] if r["type"] == pick)
    t, p = R1_SAMPLING["temperature"], R1_SAMPLING["top_p"]
    return ["## Run it", "", f"With `{file}` ({pick}); any file of the table works the same way.", "",
            "llama.cpp:", "", "```bash", f"llama-cli -hf {repo}:{pick} --temp {t} --top-p {p}",
            f"llama-server -hf {repo}:{pick} --temp {t} --top-p {p} -c 8192   # OpenAI API on :8080", "```", "",
            "Ollama:", "", "```bash", f"ollama run hf.co/{repo}:{pick}",
            f"# or with R1's template and sampling in a Modelfile: quantkit ollama {file} --vram 12", "```", "",
            f"LM Studio: search for `{repo}` in the Discover tab and pick `{file}`, or `lms get {repo}`.", "",
            "quantkit:", "", "```bash", f"hf download {repo} {file} --local-dir .",
            f"quantkit chat {file}", f"quantkit serve {file} --parallel 4   # OpenAI API on 127.0.0.1:8080", "```", ""]
