"""The model card: written by `quantkit run` and by `quantkit card`, a Hub README.md whose front matter the Hub's
own parser reads, and whose numbers are the report's, cell for cell."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from typer.testing import CliRunner

from quantkit.share.card import model_card, write_card
from quantkit.cli.app import app

runner = CliRunner()


def _table(text: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first Markdown table after `heading` (or the first table when heading is '')."""
    lines = text.splitlines()
    start = lines.index(heading) if heading else 0
    rows = []
    for line in lines[start:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows[0], rows[2:]


def _by_type(header: list[str], rows: list[list[str]]) -> dict[str, dict[str, str]]:
    cells = [dict(zip(header, r)) for r in rows]
    return {c["type"]: c for c in cells}


REPORT = {
    "recipe": {"name": "r1-qwen-7b", "description": "DeepSeek-R1-Distill-Qwen-7B", "source":
               "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "revision": None, "outtype": "BF16",
               "ladder": ["Q4_K_M"], "imatrix": "calib.imatrix.gguf"},
    "device": "CPU", "quantkit_version": "9.9.9",
    "perplexity": {"dataset": "wikitext-2", "text_file": "wiki.test.raw", "n_ctx": 512, "n_chunks": 4,
                   "n_scored": 1020, "kl_top_k": 1024},
    "memory": {"n_ctx": 8192, "kv_type": "f16", "flash_attn": True, "n_layer": 28},
    "rows": [
        {"type": "BF16", "file": "M-BF16.gguf", "path": "/nowhere/M-BF16.gguf", "size_bytes": 15 * 2**30,
         "is_base": True, "bpw": 16.0, "ppl": 10.0, "ppl_err": 0.5, "delta_ppl_pct": 0.0, "mean_kld": 0.0,
         "same_top_pct": 100.0, "vram_bytes": 16 * 2**30, "fits_gib": {"8": False}, "pareto": True},
        {"type": "Q4_K_M", "file": "M-Q4_K_M.gguf", "path": "/nowhere/M-Q4_K_M.gguf", "size_bytes": 4.4 * 2**30,
         "is_base": False, "bpw": 4.91, "ppl": 10.5, "ppl_err": 0.52, "delta_ppl_pct": 5.0, "mean_kld": 0.03127,
         "same_top_pct": 92.1, "vram_bytes": 5.1 * 2**30, "fits_gib": {"8": True}, "pareto": True},
    ],
    "gpu_sizes_gib": [8, 80], "recommended": {"8": "Q4_K_M", "80": "Q4_K_M"}, "rule": "lowest KLD that fits",
    "eval": None,
}


def test_card_front_matter_and_sections():
    imatrix = [{"file": "M.imatrix.gguf", "datasets": ["wikitext-2-train"], "chunks": 100, "chunk_size": 512}]
    text = model_card(REPORT, repo_id="me/M-GGUF", quantized_by="me", imatrices=imatrix)
    data = ModelCard(text).data  # the Hub's own parser
    assert data.base_model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert data.base_model_relation == "quantized" and data.pipeline_tag == "text-generation"
    assert data.license == "other" and data.quantized_by == "me"  # no base file to read a license from
    assert {"gguf", "deepseek-r1", "imatrix"} <= set(data.tags)
    assert "quantkit 9.9.9" in text and "quantkit convert deepseek-ai/DeepSeek-R1-Distill-Qwen-7B -t Q4_K_M" in text
    assert "--imatrix calib.imatrix.gguf" in text and "`wikitext-2-train`, 100 chunks of 512 tokens" in text
    for how in ("llama-cli -hf me/M-GGUF:Q4_K_M", "ollama run hf.co/me/M-GGUF:Q4_K_M", "lms get me/M-GGUF",
                "quantkit chat M-Q4_K_M.gguf", "quantkit serve M-Q4_K_M.gguf"):
        assert how in text, how
    header, rows = _table(text, "## Files")
    q4 = _by_type(header, rows)["Q4_K_M"]
    assert (q4["size GiB"], q4["bpw"], q4["PPL"], q4["KLD"], q4["VRAM GiB @ 8192"]) == (
        "4.400", "4.91", "10.5000 ± 0.5200", "0.03127", "5.10")
    gpu_header, gpu_rows = _table(text, "## Which file for your GPU")
    assert [r[0] for r in gpu_rows] == ["8 GB", "80 GB"] and "`M-Q4_K_M.gguf` (Q4_K_M)" in gpu_rows[0][1]


def test_card_with_accuracy_and_no_base_model():
    report = copy.deepcopy(REPORT)
    report["recipe"]["source"] = "./my-checkpoint"
    report["recipe"]["imatrix"] = None
    report["eval"] = {"task": "math500", "problems": 100, "samples": 4, "max_tokens": 32768, "temperature": 0.6,
                      "top_p": 0.95}
    report["rows"][1].update({"pass_at_1": 0.81, "pass_low": 0.75, "pass_high": 0.86, "delta_pass": -0.02,
                              "delta_pass_low": -0.05, "delta_pass_high": 0.01})
    text = model_card(report)
    data = ModelCard(text).data
    assert data.base_model is None and "imatrix" not in data.tags
    q4 = _by_type(*_table(text, "## Files"))["Q4_K_M"]
    assert q4["pass@1 %"] == "81.0 [75–86]" and q4["Δ pass@1"] == "-2.0 [-5, +1]"
    assert "`quantkit eval` on `math500`" in text and "<you>/" in text


def test_card_command_needs_a_report(tmp_path):
    result = runner.invoke(app, ["card", str(tmp_path)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "report.json" in result.stderr


@pytest.mark.slow
def test_run_writes_the_card_with_the_reports_numbers():
    """The card `quantkit run` wrote for the reduced SmolLM2 recipe: every number of its table is the report's."""
    from tests._fixtures.run_recipe import full_run

    out, _ = full_run()
    card = (out / "README.md").read_text()
    report_md = (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    data = ModelCard(card).data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and data.base_model_relation == "quantized"
    assert "gguf" in data.tags and data.pipeline_tag == "text-generation" and data.license
    card_rows = _by_type(*_table(card, "## Files"))
    report_header, report_rows = _table(report_md, "")
    report_rows = {r[0].removesuffix(" (base)"): dict(zip(report_header, r)) for r in report_rows}
    assert len(card_rows) == len(report_rows) == len(report["rows"])
    compared = 0
    for t, row in report_rows.items():
        mine = card_rows[t + (" (base)" if t == report["rows"][0]["type"] else "")]
        for column, value in row.items():
            if column in mine:
                assert mine[column] == value, (t, column)
                compared += 1
    assert compared == 10 * len(report_rows)  # type, size, bpw, PPL, ΔPPL, KLD, same top, pass@1, Δ pass@1, VRAM
    gpu = {r[0]: r[1] for r in _table(card, "## Which file for your GPU")[1]}
    for g, t in report["recommended"].items():
        assert (t is None and gpu[f"{g} GB"] == "none fits whole") or f"({t})" in gpu[f"{g} GB"]
    assert f"quantkit {report['quantkit_version']}" in card
    # `quantkit card` writes the same card again, with the repo in its commands
    assert runner.invoke(app, ["card", str(out), "--repo-id", "me/SmolLM2-GGUF"]).exit_code == 0
    again = (out / "README.md").read_text()
    assert _table(again, "## Files") == _table(card, "## Files") and "me/SmolLM2-GGUF" in again
    write_card(Path(out))  # leave the folder as the run made it


def test_imatrix_found_beside_the_models(tmp_path):
    """An imatrix GGUF in models/ (general.type = imatrix) is named in the card with its calibration text."""
    from gguf import GGUFWriter
    import numpy as np

    from quantkit.share.card import find_imatrices

    (tmp_path / "models").mkdir()
    w = GGUFWriter(tmp_path / "models" / "M-F16.imatrix-0a1b.gguf", "llama")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["wikitext-2-train"])
    w.add_uint32("imatrix.chunk_count", 12)
    w.add_uint32("imatrix.chunk_size", 512)
    w.add_tensor("blk.0.attn_q.weight.in_sum2", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    found = find_imatrices(tmp_path)
    assert found == [{"file": "M-F16.imatrix-0a1b.gguf", "datasets": ["wikitext-2-train"], "chunks": 12,
                      "chunk_size": 512}]
    text = write_card(tmp_path, repo_id="me/M-GGUF").read_text()
    assert "`M-F16.imatrix-0a1b.gguf`: calibration text `wikitext-2-train`, 12 chunks of 512 tokens" in text
