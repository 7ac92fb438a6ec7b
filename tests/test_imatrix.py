"""Importance matrices: the GGUF and legacy files round-trip; the collected sums of squares and counts equal an
independent forward pass (transformers, hooks on every nn.Linear); calibration and scored texts are kept apart;
the cached `--imatrix auto` file; bad inputs end in one clean line."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.errors import ImatrixMismatchError, NotImatrixError
from quantkit.imatrix import (Imatrix, ImatrixEntry, check_imatrix_matches, imatrix_for_base, load_imatrix,
                              read_imatrix, write_imatrix, write_legacy_imatrix)
from quantkit.imatrix.calibration import calibration_text, text_overlap
from reference.cache import cached_dir
from tests._fixtures.texts import english_text
from reference.tiny import tiny_checkpoint

runner = CliRunner()
CTX, CHUNKS, BATCH = 64, 4, 128  # two chunks per decode, as llama-imatrix's default batch does with 4


def _sample() -> Imatrix:
    rng = np.random.default_rng(7)
    return Imatrix({
        "blk.0.attn_q.weight": ImatrixEntry(rng.random((1, 8), dtype=np.float32) * 100, np.array([512])),
        "blk.0.ffn_up_exps.weight": ImatrixEntry(rng.random((4, 8), dtype=np.float32), np.array([3, 0, 5, 7])),
        "output.weight": ImatrixEntry(rng.random((1, 8), dtype=np.float32), np.array([1024])),
    }, datasets=["calibration.txt"], chunk_count=2, chunk_size=512)


# ---------------------------------------------------------------------------------------------------------------
# files


def test_gguf_round_trip_in_llama_imatrix_layout(tmp_path):
    original = _sample()
    path = write_imatrix(original, tmp_path / "imatrix.gguf")
    back = read_imatrix(path)
    assert (back.datasets, back.chunk_count, back.chunk_size, back.legacy) == (["calibration.txt"], 2, 512, False)
    assert list(back.entries) == sorted(original.entries)
    for name, e in original.entries.items():
        assert np.array_equal(back.entries[name].sums, e.sums) and np.array_equal(back.entries[name].counts, e.counts)
    # llama-imatrix's layout: only these keys; in_sum2 is (columns, experts) F32, counts (1, experts) F32, each
    # with its trailing dimensions of 1 dropped, as ggml writes them
    reader = GGUFReader(path)
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert keys == ["general.type", "imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"]
    shapes = {t.name: (t.tensor_type.name, [int(n) for n in t.shape]) for t in reader.tensors}
    assert shapes["blk.0.ffn_up_exps.weight.in_sum2"] == ("F32", [8, 4])
    assert shapes["blk.0.ffn_up_exps.weight.counts"] == ("F32", [1, 4])
    assert shapes["output.weight.in_sum2"] == ("F32", [8]) and shapes["output.weight.counts"] == ("F32", [1])
    # llama-quantize's normalisation: sum / count per expert, 1 where an expert saw nothing
    values = load_imatrix(path)["blk.0.ffn_up_exps.weight"].reshape(4, 8)
    e = original.entries["blk.0.ffn_up_exps.weight"]
    assert np.array_equal(values[1], np.ones(8, dtype=np.float32))
    assert np.array_equal(values[3], e.sums[3] / np.float32(7))


def test_legacy_round_trip(tmp_path):
    original = _sample()
    legacy = read_imatrix(write_legacy_imatrix(original, tmp_path / "imatrix.dat"))
    assert legacy.legacy and legacy.chunk_count == 2 and legacy.datasets == ["calibration.txt"]
    # ncall = tokens / chunk size rounded up; stored as mean × ncall; normalised back to the same means
    assert int(legacy.entries["output.weight"].counts[0]) == 2
    want, got = original.importance(), legacy.importance()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
    again = read_imatrix(write_legacy_imatrix(legacy, tmp_path / "again.dat"))
    assert (tmp_path / "again.dat").read_bytes() == (tmp_path / "imatrix.dat").read_bytes()
    assert again.entries.keys() == legacy.entries.keys()


def test_not_an_imatrix(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello world, this is not an importance matrix\n")
    with pytest.raises(NotImatrixError):
        read_imatrix(text)
    model = _fake_model(tmp_path / "model.gguf", {"blk.0.attn_q.weight": (8, 8)})
    with pytest.raises(NotImatrixError, match="no \\*.in_sum2"):
        read_imatrix(model)


def _fake_model(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    """A GGUF holding only tensors of these ggml shapes (ne0 first): enough for the mismatch check's header read."""
    w = GGUFWriter(path, arch="llama")
    for name, shape in tensors.items():
        w.add_tensor(name, np.zeros(tuple(reversed(shape)), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_mismatch_names_the_first_tensor(tmp_path):
    layers = {f"blk.{i}.{t}.weight": (8, 16) for i in range(2) for t in ("attn_q", "ffn_up")}
    model = _fake_model(tmp_path / "model.gguf", {**layers, "blk.0.attn_norm.weight": (8,)})

    def imatrix(names, cols=8):
        return Imatrix({n: ImatrixEntry(np.ones((1, cols), dtype=np.float32), np.array([16])) for n in names})

    check_imatrix_matches(imatrix(layers), model)  # the right one passes
    with pytest.raises(ImatrixMismatchError, match="blk.0.attn_q.weight: the importance matrix has 9 columns"):
        check_imatrix_matches(imatrix(layers, cols=9), model)
    with pytest.raises(ImatrixMismatchError, match="blk.7.attn_q.weight, which model.gguf does not have"):
        check_imatrix_matches(imatrix([*layers, "blk.7.attn_q.weight"]), model)
    with pytest.raises(ImatrixMismatchError, match="blk.1.attn_q.weight: the importance matrix has no data for "
                                                   "layer 1"):
        check_imatrix_matches(imatrix([n for n in layers if n.startswith("blk.0.")]), model)


# ---------------------------------------------------------------------------------------------------------------
# calibration


def test_calibration_is_apart_from_the_scored_text():
    from quantkit.measure.texts import dataset_path, read_text

    calibration = calibration_text("python-docs")
    assert (calibration.name, calibration.scored) == ("python-docs-calibration", "python-docs-heldout")
    scored = read_text(dataset_path("python-docs-heldout"))
    cal_paragraphs = {" ".join(p.split()) for p in calibration.text.decode().split("\n\n")}
    assert not cal_paragraphs & {" ".join(p.split()) for p in scored.decode().split("\n\n")}
    assert len(calibration.text) > 1.5 * len(scored)
    overlap = text_overlap(calibration.text, scored)
    assert overlap.ngrams < 0.02 and overlap.lines < 0.1, overlap
    whole = text_overlap(calibration.text, read_text(dataset_path("python-docs")))
    assert whole.ngrams > 0.5  # scoring the whole text after calibrating on part of it would leak
    assert text_overlap(scored, scored).ngrams == 1.0


# ---------------------------------------------------------------------------------------------------------------
# collection on a tiny model, against transformers


def _smooth_checkpoint() -> Path:
    """A tiny Llama with the R1-Distill-Llama tokenizer but small initial weights and plain RoPE: the shared tiny
    Llama's sharp attention (weights of std 0.2, llama3 rope scaling) turns float32 rounding differences between
    two correct forward passes into 1e-3 differences after the first attention; this one keeps them near 1e-6."""
    import shutil

    import torch
    import transformers

    def build(tmp: Path) -> None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(tiny_checkpoint("llama") / name, tmp / name)
        torch.manual_seed(99)
        config = transformers.LlamaConfig(vocab_size=128256, hidden_size=128, intermediate_size=256,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                          bos_token_id=128000, eos_token_id=128001, initializer_range=0.02)
        model = transformers.LlamaForCausalLM(config)
        model.config.architectures = ["LlamaForCausalLM"]
        model.save_pretrained(tmp, safe_serialization=True)

    return cached_dir("imatrix-smooth-llama-v1", build)


@pytest.fixture(scope="module")
def tiny_f32() -> Path:
    from quantkit.convert import convert

    def build(tmp: Path) -> None:
        result = convert(_smooth_checkpoint(), tmp, outtype="F32")
        result.base.path.rename(tmp / "model.gguf")

    return cached_dir("imatrix-smooth-llama-f32-v1", build) / "model.gguf"


def _reference(checkpoint: Path, tokens: np.ndarray, bos: int) -> dict[str, tuple[np.ndarray, int]]:
    """Σx² per input column and rows seen, per GGUF weight name, from transformers' float32 forward pass with a
    hook on every nn.Linear, over the same chunks (each starting with BOS)."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, torch_dtype=torch.float32)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    sums: dict[str, list] = {}

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0].detach().double().reshape(-1, inputs[0].shape[-1])
            s = sums.setdefault(name, [0.0, 0])
            s[0] = s[0] + (x * x).sum(0).numpy()
            s[1] += x.shape[0]
        return record

    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if module_name == "lm_head":
                module.register_forward_hook(hook("output.weight"))
                continue
            layer, rest = module_name.removeprefix("model.layers.").split(".", 1)
            module.register_forward_hook(hook(f"blk.{layer}.{names[rest]}.weight"))
    chunks = tokens[:CHUNKS * CTX].reshape(CHUNKS, CTX).copy()
    chunks[:, 0] = bos
    with torch.no_grad():
        for chunk in chunks:
            model(torch.tensor(chunk[None], dtype=torch.long))
    return {k: (v[0], v[1]) for k, v in sums.items()}


@pytest.mark.slow
def test_collection_matches_transformers(tiny_f32):
    from quantkit.measure.texts import read_text
    from quantkit.imatrix.collect import collect_imatrix
    from quantkit.runtime import load_model

    text = read_text(english_text())
    # attention in float32: llama.cpp's F16 KV cache (or its F16 flash attention) alone moves the sums after the
    # first attention by ~5e-4 from a float32 reference
    imatrix, stats = collect_imatrix(tiny_f32, text, dataset="english", n_ctx=CTX, n_batch=BATCH, chunks=CHUNKS,
                                     process_output=True, threads=1, n_gpu_layers=0, f32_attention=True)
    assert (stats.n_chunks, stats.n_seq, imatrix.chunk_count, imatrix.chunk_size) == (CHUNKS, 2, CHUNKS, CTX)
    with load_model(tiny_f32) as model:
        tokens = model.tokenize(text, add_special=True)
        bos = model.bos
    reference = _reference(_smooth_checkpoint(), tokens, bos)
    assert sorted(imatrix.entries) == sorted(reference)  # every linear layer, output.weight included
    for name, (sums, rows) in sorted(reference.items()):
        e = imatrix.entries[name]
        assert e.counts.tolist() == [rows] == [CHUNKS * CTX], name
        np.testing.assert_allclose(e.sums[0], sums, rtol=2e-5, atol=0, err_msg=name)


@pytest.mark.slow
def test_cli_json_summary(tiny_f32, tmp_path):
    out = tmp_path / "imatrix.gguf"
    text = english_text()
    result = runner.invoke(app, ["imatrix", str(tiny_f32), "--text-file", str(text), "--ctx", str(CTX),
                                 "--chunks", "2", "--threads", "1", "-ngl", "0", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["n_chunks"], summary["chunk_size"], summary["dataset"]) == (2, CTX, str(text))
    assert summary["n_entries"] == 14 and summary["overlap"] is None  # a user's text: the scored one is unknown
    imatrix = read_imatrix(out)
    assert (imatrix.chunk_count, imatrix.chunk_size, imatrix.datasets) == (2, CTX, [str(text)])
    assert "output.weight" not in imatrix.entries  # only with --process-output
    assert all(e.counts.tolist() == [2 * CTX] for e in imatrix.entries.values())


@pytest.mark.slow
def test_auto_imatrix_is_computed_once_and_cached(tiny_f32, tmp_path):
    base = tmp_path / "base.gguf"
    os.link(tiny_f32, base)
    text = english_text()
    first = imatrix_for_base(base, text_file=text, n_ctx=CTX, chunks=2, threads=1, n_gpu_layers=0)
    assert first.parent == tmp_path and first.name.startswith("base.imatrix-") and first.suffix == ".gguf"
    stamp = first.stat().st_mtime_ns
    assert imatrix_for_base(base, text_file=text, n_ctx=CTX, chunks=2, threads=1, n_gpu_layers=0) == first
    assert first.stat().st_mtime_ns == stamp  # not computed again
    other = imatrix_for_base(base, text_file=text, n_ctx=CTX, chunks=1, threads=1, n_gpu_layers=0)
    assert other != first and read_imatrix(other).chunk_count == 1
    check_imatrix_matches(first, base)
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


# ---------------------------------------------------------------------------------------------------------------
# bad inputs through the CLI


def _clean_failure(args: list[str], expect: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert expect.lower() in err.lower(), err
    return err


@pytest.mark.slow
def test_text_too_short_for_one_chunk(tiny_f32, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.\n")
    out = tmp_path / "out" / "imatrix.gguf"
    err = _clean_failure(["imatrix", str(tiny_f32), "--text-file", str(short), "--ctx", str(CTX), "--threads", "1",
                          "-ngl", "0", "-o", str(out)], "one chunk of --ctx 64 needs 64")
    assert "smaller --ctx" in err  # the hint
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))


@pytest.mark.slow
def test_imatrix_of_another_model_is_refused_before_quantizing(tmp_path):
    src, out = tiny_checkpoint("llama"), tmp_path / "out"
    wrong = write_imatrix(Imatrix({"blk.0.attn_q.weight": ImatrixEntry(np.ones((1, 100), np.float32),
                                                                       np.array([64]))}), tmp_path / "other.gguf")
    err = _clean_failure(["convert", str(src), "-o", str(out), "-t", "Q4_K_M", "--outtype", "F16", "--imatrix",
                          str(wrong)], "blk.0.attn_q.weight: the importance matrix has 100 columns")
    assert "made for another model" in err
    assert not list(out.glob("*Q4_K_M*"))
    not_imatrix = tmp_path / "notes.txt"
    not_imatrix.write_text("plain text\n")
    _clean_failure(["convert", str(src), "-o", str(out), "-t", "Q4_K_M", "--outtype", "F16", "--imatrix",
                    str(not_imatrix)], "is not an importance matrix")
    assert not list(out.glob("*Q4_K_M*"))


# ---------------------------------------------------------------------------------------------------------------
# MUL_MAT_ID (experts): no MoE model here, so the accumulator is fed a node the way libllama's graph shows one


class _FakeNode:
    def __init__(self, name: str = "", ne=(1, 1, 1, 1), data: np.ndarray | None = None, srcs=()):
        self.name, self.ne, self._data, self._srcs = name, ne, data, srcs

    def src(self, i):
        return self._srcs[i]

    def array(self):
        return self._data


def test_experts_are_counted_per_routed_token():
    from quantkit.imatrix.collect import Accumulator

    rng = np.random.default_rng(3)
    n_as, n_used, n_tokens, cols = 4, 2, 20, 6
    weight = _FakeNode("blk.0.ffn_up_exps.weight", ne=(cols, 8, n_as, 1))
    x = rng.standard_normal((1, n_tokens, 1, cols)).astype(np.float32)  # one activation row per token, broadcast
    ids = np.stack([rng.choice(n_as, n_used, replace=False) for _ in range(n_tokens)]).astype(np.int32)
    node = _FakeNode(srcs=(weight, _FakeNode(data=x), _FakeNode(data=ids[None, None])))
    acc = Accumulator()
    acc._add_experts(node)
    acc._add_experts(node)
    # llama-imatrix's loop, written out
    want = np.zeros((n_as, cols), dtype=np.float32)
    counts = np.zeros(n_as, dtype=np.int64)
    for _ in range(2):
        for idx in range(n_used):
            for row in range(n_tokens):
                ex = ids[row, idx]
                counts[ex] += 1
                want[ex] += x[0, row, 0] * x[0, row, 0]
    assert np.array_equal(acc.counts[weight.name], counts) and counts.sum() == 2 * n_tokens * n_used
    assert np.array_equal(acc.sums[weight.name], want)
    imatrix = acc.imatrix(chunk_size=10, datasets=["t"])
    assert imatrix.entries[weight.name].sums.shape == (n_as, cols) and imatrix.chunk_count == counts.max() // 10


def test_wikitext_calibrates_on_train_from_the_same_zip(tmp_path, monkeypatch):
    import zipfile

    from tests._fixtures.hub_server import FakeHub

    monkeypatch.setenv("QUANTKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "hub" / "datasets" / "ggml-org" / "ci"
    folder.mkdir(parents=True)
    train = " = Valkyria Chronicles = \n the train split , not the scored one . \n" * 20
    test = " = Robert Boulter = \n an English actor who is scored . \n" * 20
    with zipfile.ZipFile(folder / "wikitext-2-raw-v1.zip", "w") as zf:
        zf.writestr("wikitext-2-raw/wiki.test.raw", test.encode())
        zf.writestr("wikitext-2-raw/wiki.train.raw", train.encode())
    with FakeHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        calibration = calibration_text("wikitext-2")
        assert (calibration.name, calibration.scored) == ("wikitext-2-train", "wikitext-2")
        assert calibration.text == train.encode()[:-1]
        from quantkit.imatrix.compute import _overlap

        overlap = _overlap(calibration)
    assert overlap.scored == "wikitext-2" and overlap.ngrams == 0.0 and overlap.n_lines == 2
