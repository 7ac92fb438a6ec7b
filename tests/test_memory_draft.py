"""estimate-memory --draft and `-ngl auto` with a draft: the draft's part is what estimate-memory says of the draft
alone and what its GGUF holds (tensor bytes read by gguf's own reader, the KV formula on its header's shapes);
the totals add both; with GPU memory the draft is placed first, wholly or not at all, and the target gets the rest."""
from __future__ import annotations

import json

import pytest
from gguf import GGUFReader
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.memory import (
    AS_WRITTEN,
    DRAFT_TYPE,
    GIB,
    GPU_OVERHEAD,
    auto_gpu_layers,
    auto_placement,
    estimate_memory,
)
from reference.cache import cached_dir
from tests._fixtures.memory import tiny_model

runner = CliRunner()
CTX = 4096


@pytest.fixture(scope="module")
def target():
    return tiny_model("qwen2-48")  # 48 layers, F16


@pytest.fixture(scope="module")
def draft():
    """qwen2-28 quantized to Q4_0 by libllama: a draft whose tensors have the types libllama chose."""
    from quantkit.quantize.file import quantize

    base = tiny_model("qwen2-28")
    folder = cached_dir("memory-draft-q4_0-v1", lambda tmp: quantize(base, tmp / "draft-Q4_0.gguf", "Q4_0"))
    return folder / "draft-Q4_0.gguf"


def _json(*args) -> dict:
    result = runner.invoke(app, ["estimate-memory", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _gguf_facts(path) -> tuple[int, int]:
    """(tensor data bytes, f16 KV bytes at CTX) from the file itself, through gguf's reader."""
    r = GGUFReader(path)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()

    def key(name):
        return int(r.fields[f"{arch}.{name}"].parts[-1][0])

    n_layer, n_embd, n_head, n_kv = (key(k) for k in ("block_count", "embedding_length", "attention.head_count",
                                                      "attention.head_count_kv"))
    return sum(int(t.n_bytes) for t in r.tensors), n_layer * CTX * n_kv * (n_embd // n_head) * 2 * 2


def test_the_draft_part_is_the_drafts_own_estimate(target, draft):
    both = _json(target, "-t", "Q4_K_M,Q8_0", "--draft", draft, "--ctx", CTX)
    (a,) = estimate_memory(str(draft), [AS_WRITTEN], n_ctx=CTX).types
    (q4,) = _json(draft, "-t", "Q4_0", "--ctx", CTX)["types"]  # libllama's Q4_0 choices: what the file holds
    d = both["draft"]
    (dt,) = d["types"]
    assert d["target"] == str(draft) and dt["type"] == AS_WRITTEN and d["n_ctx"] == CTX
    for k in ("weights_bytes", "file_bytes", "kv_bytes", "compute_bytes", "output_bytes", "total_bytes"):
        assert dt[k] == getattr(a, k), k
    for k in ("weights_bytes", "kv_bytes", "compute_bytes", "total_bytes"):
        assert dt[k] == q4[k], k
    weights, kv = _gguf_facts(draft)
    assert dt["weights_bytes"] == weights and dt["file_bytes"] == draft.stat().st_size and dt["kv_bytes"] == kv
    assert dt["total_bytes"] == weights + kv + dt["compute_bytes"] + dt["output_bytes"]
    # the target's rows are unchanged by the draft; the totals add the two
    plain = _json(target, "-t", "Q4_K_M,Q8_0", "--ctx", CTX)
    assert both["types"] == plain["types"] and plain["draft"] is None and plain["totals"] == []
    assert [(t["type"], t["total_bytes"]) for t in both["totals"]] == [
        (row["type"], row["total_bytes"] + dt["total_bytes"]) for row in both["types"]]


def test_the_table_shows_the_draft(target, draft):
    result = runner.invoke(app, ["estimate-memory", str(target), "-t", "Q4_K_M", "--draft", str(draft)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # the console wraps long lines
    assert "with draft GiB" in text and f"draft tiny-qwen2-28 (qwen2, 28 layers) from {draft}, as-written" in text


def test_a_draft_named_by_label_is_counted_at_the_recipes_draft_type():
    both = estimate_memory("7B", ["Q4_K_M"], n_ctx=32768, draft="1.5B")
    alone = estimate_memory("1.5B", [DRAFT_TYPE], n_ctx=32768)
    (dt,), (a,) = both.draft.types, alone.types
    assert dt.type == "Q4_0" and dt.weights_bytes == a.weights_bytes and dt.kv_bytes == a.kv_bytes
    # REFERENCE: 28 layers × 32768 × 2 kv heads × 128 × 2 × f16
    assert dt.kv_bytes == 28 * 32768 * 2 * 128 * 2 * 2


def _gpu_alone(path, qtype: str) -> int:
    """The GPU bytes of `path` wholly offloaded, from its own estimate with room to spare (the process's GPU
    overhead taken off: the target pays it)."""
    (row,) = estimate_memory(str(path), [qtype], n_ctx=CTX, n_batch=512, n_ubatch=512, vram_gib=[64]).types
    assert row.fit.fits
    return row.fit.gpu_bytes - GPU_OVERHEAD


def test_the_target_fits_what_the_draft_leaves(target, draft):
    n_all_t, n_all_d = 49, 29
    draft_gpu = _gpu_alone(draft, AS_WRITTEN)
    # plenty: both wholly
    assert auto_placement(target, draft, CTX, 64 * GIB) == (n_all_t, n_all_d)
    # the target alone fits in this much, but not beside the draft: it gets what fits in the rest
    whole = estimate_memory(str(target), ["F16"], n_ctx=CTX, vram_gib=[64]).types[0].fit.gpu_bytes
    vram = whole + draft_gpu // 2
    assert auto_gpu_layers(target, CTX, vram) == n_all_t
    ngl, dngl = auto_placement(target, draft, CTX, vram)
    assert dngl == n_all_d and 0 < ngl < n_all_t
    assert ngl == auto_gpu_layers(target, CTX, vram - draft_gpu)
    # room for the draft only just, not for its KV cache at this context: it stays on the CPU, the target has all
    small = GPU_OVERHEAD + draft_gpu // 2
    ngl, dngl = auto_placement(target, draft, CTX, small)
    assert dngl == 0 and ngl == auto_gpu_layers(target, CTX, small) > 0


def test_estimate_memory_fit_counts_the_draft(target, draft):
    whole = estimate_memory(str(target), ["F16"], n_ctx=CTX, vram_gib=[64]).types[0].fit.gpu_bytes
    vram_gib = [(whole + _gpu_alone(draft, AS_WRITTEN) // 2) / GIB]
    alone = estimate_memory(str(target), ["F16"], n_ctx=CTX, vram_gib=vram_gib).types[0]
    both = estimate_memory(str(target), ["F16"], n_ctx=CTX, vram_gib=vram_gib, draft=str(draft))
    (row,), (d,) = both.types, both.draft.types
    assert alone.fit.fits and not row.fit.fits and row.fit.n_gpu_layers < alone.fit.n_gpu_layers
    assert d.fit.n_gpu_layers == 29 and row.fit.max_ctx < alone.fit.max_ctx
    assert both.totals[0].gpu_bytes == row.fit.gpu_bytes + d.fit.gpu_bytes <= vram_gib[0] * GIB


def test_auto_with_a_draft_offloads_nothing_on_a_cpu_build(target, draft):
    from quantkit import runtime
    from quantkit.runtime.offload import resolve_draft_gpu_layers

    if runtime.supports_gpu_offload():
        pytest.skip("a GPU build of llama.cpp: 'auto' depends on the GPU's free memory")
    assert resolve_draft_gpu_layers("auto", target, draft, CTX) == (0, 0)
    assert resolve_draft_gpu_layers("all", target, draft, CTX) == (runtime.ALL_LAYERS, runtime.ALL_LAYERS)
    assert resolve_draft_gpu_layers("7", target, draft, CTX) == (7, 7)
