"""Budget mixes (`--target-size` / `--target-bpw`): ggml's round trip against numpy, the budget solver against
brute force, the plan against the file libllama writes, and bad inputs as one-line CLI errors."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T, GGUFReader
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.quantize.damage import Option, TensorOptions, measure
from quantkit.quantize.mixes import KEY_PLAN, KEY_TARGET, layer_table, plan_digest
from quantkit.quantize.solve import solve
from quantkit.quant_types import LADDER
from quantkit.runtime.quants import round_trip
from tests._fixtures.memory import write_random_imatrix
from tests._fixtures.memory import mix_model as build_mix_model

runner = CliRunner()
# two llama layers 256 wide (every block size divides), GQA 2, untied output: 16 planned tensors


# ---------------------------------------------------------------------------------------------------------------
# independent references


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def numpy_q8_0(x: np.ndarray) -> tuple[np.ndarray, bytes]:
    """quantize_row_q8_0_ref and dequantize_row_q8_0 in numpy: blocks of 32, d = amax/127 (stored as f16)."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    d = np.abs(blocks).max(axis=1) / 127
    inv = np.where(d > 0, 1 / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = _round_half_away(blocks * inv[:, None]).astype(np.int8)
    d16 = d.astype(np.float16)
    raw = b"".join(dd.tobytes() + qq.tobytes() for dd, qq in zip(d16, q))
    return (q.astype(np.float32) * d16.astype(np.float32)[:, None]).reshape(x.shape), raw


def numpy_q4_0(x: np.ndarray) -> tuple[np.ndarray, bytes]:
    """quantize_row_q4_0_ref and dequantize_row_q4_0: d = (the value of largest magnitude)/-8, nibbles of
    min(15, trunc(x/d + 8.5)), the first 16 values in the low nibbles."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    idx = np.abs(blocks).argmax(axis=1)
    vmax = blocks[np.arange(len(blocks)), idx]
    d = vmax / -8
    inv = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.minimum(15, np.trunc(blocks * inv[:, None] + 8.5)).astype(np.uint8)
    d16 = d.astype(np.float16)
    packed = q[:, :16] | (q[:, 16:] << 4)
    raw = b"".join(dd.tobytes() + pp.tobytes() for dd, pp in zip(d16, packed))
    return ((q.astype(np.float32) - 8) * d16.astype(np.float32)[:, None]).reshape(x.shape), raw


@pytest.mark.parametrize("qtype, reference", [(T.Q8_0, numpy_q8_0), (T.Q4_0, numpy_q4_0)])
def test_ggml_round_trip_equals_numpy(qtype, reference):
    x = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32) * 0.05
    ours, raw = round_trip(int(qtype), x)
    ref, ref_raw = reference(x)
    assert raw == ref_raw
    np.testing.assert_array_equal(ours, ref)
    assert np.abs(ours - x).max() > 0  # a real round trip, not a copy


def test_round_trip_refuses_what_ggml_would_abort_on():
    x = np.zeros((2, 256), np.float32)
    with pytest.raises(ValueError, match="importance"):
        round_trip(int(T.IQ2_XXS), x)
    with pytest.raises(ValueError, match="multiple of 256"):
        round_trip(int(T.Q4_K), np.zeros((2, 96), np.float32))


# ---------------------------------------------------------------------------------------------------------------
# the solver


def _random_tensors(rng, n: int) -> list[TensorOptions]:
    out = []
    for k in range(n):
        sizes = np.sort(rng.choice(np.arange(1, 40), 5, replace=False)) * 32
        errors = np.sort(rng.uniform(0, 100, 5))[::-1]
        out.append(TensorOptions(f"t{k}", (1,), "F16", [Option(f"o{i}", int(s), float(e))
                                                          for i, (s, e) in enumerate(zip(sizes, errors))]))
    return out


def test_solver_fits_and_is_within_one_step_of_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(30):
        tensors = _random_tensors(rng, 5)
        lo = sum(t.options[0].n_bytes for t in tensors)
        hi = sum(t.options[-1].n_bytes for t in tensors)
        budget = int(rng.uniform(lo, hi))
        choice = solve(tensors, budget)
        size = sum(t.options[choice[t.name]].n_bytes for t in tensors)
        error = sum(t.options[choice[t.name]].error for t in tensors)
        assert size <= budget
        best = min(sum(t.options[i].error for t, i in zip(tensors, combo))
                   for combo in itertools.product(range(5), repeat=5)
                   if sum(t.options[i].n_bytes for t, i in zip(tensors, combo)) <= budget)
        step = max(t.options[0].error - t.options[-1].error for t in tensors)
        assert best <= error <= best + step, trial
        uniform = [sum(t.options[i].error for t in tensors) for i in range(5)
                   if sum(t.options[i].n_bytes for t in tensors) <= budget]
        assert all(error <= u for u in uniform)


# ---------------------------------------------------------------------------------------------------------------
# on a tiny model (libllama)


@pytest.fixture(scope="module")
def mix_model() -> Path:
    return build_mix_model()


@pytest.fixture(scope="module")
def imatrix_file(mix_model, tmp_path_factory) -> Path:
    """A GGUF imatrix for the tiny model: random positive sums of squares over 10 chunks of 100 tokens."""
    return write_random_imatrix(tmp_path_factory.mktemp("imatrix") / "imatrix.gguf", mix_model)


@pytest.mark.slow
def test_measured_error_is_the_weighted_round_trip_error(mix_model, imatrix_file):
    """Q8_0 (which ignores importance values when quantizing) against numpy: Σ imatrix_j (w - ŵ)² over every
    row for a layer tensor; the mean importance of same-width tensors for output.weight; and for the untied
    token_embd, a lookup, the mean over rows."""
    from quantkit.imatrix import load_imatrix

    imatrix = load_imatrix(imatrix_file)
    measured = {t.name: t for t in measure(mix_model, imatrix, sample_values=1 << 20, types=[T.Q8_0, T.Q4_0])}
    reader = GGUFReader(mix_model)
    data = {t.name: np.asarray(t.data, np.float32).reshape(-1, int(t.shape[0])) for t in reader.tensors}
    width_mean = np.mean([v for n, v in imatrix.items() if v.size == 256], axis=0)
    for name, weights, scale in (("blk.1.attn_v.weight", imatrix["blk.1.attn_v.weight"], 1.0),
                                 ("output.weight", width_mean, 1.0),
                                 ("token_embd.weight", np.ones(256), 1 / data["token_embd.weight"].shape[0])):
        w = data[name]
        ref = float((weights * (w - numpy_q8_0(w)[0]) ** 2).sum()) * scale
        option = next(o for o in measured[name].options if o.type == "Q8_0")
        assert option.error == pytest.approx(ref, rel=1e-5), name
        assert option.error > 0
    assert [o.type for o in measured["blk.0.ffn_down.weight"].options] == ["Q4_0", "Q8_0"]  # within the types asked for, by size


def _quantize(*args: str):
    return runner.invoke(app, ["quantize", *args, "--threads", "1"])


@pytest.mark.slow
def test_planned_types_are_the_written_types(mix_model, imatrix_file, tmp_path):
    base_size = mix_model.stat().st_size
    size = int(base_size * 0.17)  # about 2.7 bits per weight: the IQ types must come in
    result = _quantize(str(mix_model), "--imatrix", str(imatrix_file), "--target-size", str(size),
                       "--target-bpw", "5.5", "-o", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert [Path(f["path"]).name for f in files] == [f"mix-MIX-{size}.gguf", "mix-MIX-5.50bpw.gguf"]
    for f, limit in zip(files, (size, None)):
        reader = GGUFReader(f["path"])
        written = {t.name: t.tensor_type.name for t in reader.tensors}
        assert written == f["tensor_types"]
        assert f["n_bytes"] == Path(f["path"]).stat().st_size
        kv = {k: bytes(v.parts[-1]).decode() for k, v in reader.fields.items() if k.startswith("quantize.mix")}
        assert kv[KEY_PLAN] == plan_digest(written)
        if limit is not None:
            assert f["n_bytes"] <= limit and kv[KEY_TARGET] == f"size<={size}"
            assert any(t.startswith("IQ") for t in written.values()), written
            assert f["n_bytes"] > 0.97 * limit  # the budget is used, not wasted
        else:
            n_params = sum(int(np.prod(t.shape)) for t in reader.tensors)
            data = sum(int(t.n_bytes) for t in reader.tensors)
            assert 8 * data / n_params <= 5.5
            assert len(set(written.values())) > 2  # a mix, not one type
    # estimate-memory shows the same plan before any quantizing
    shown = runner.invoke(app, ["estimate-memory", str(mix_model), "--imatrix", str(imatrix_file),
                                "--target-size", str(size), "--json"])
    assert shown.exit_code == 0, shown.output
    plan = json.loads(shown.stdout)["plans"][0]
    assert plan["types"] == files[0]["tensor_types"] and plan["file_bytes"] == files[0]["n_bytes"]
    again = _quantize(str(mix_model), "--imatrix", str(imatrix_file), "--target-size", str(size), "-o", str(tmp_path))
    assert again.exit_code == 0 and again.stdout.startswith("kept "), again.output


def _rows_after(lines: list[str], title: str) -> list[list[str]]:
    """The cells of the table printed under the line `title`, up to the next table (a `layer` header)."""
    start = lines.index(title) + 2  # the title, then the column names
    end = next(i for i in range(start, len(lines)) if lines[i].split()[:1] == ["layer"])
    return [line.split() for line in lines[start:end]]


@pytest.mark.slow
def test_estimate_memory_json_carries_what_the_table_shows(mix_model, imatrix_file):
    """The plan's line, the standard types' damage and the layer table, from the JSON document's fields."""
    size = int(mix_model.stat().st_size * 0.3)
    args = ["estimate-memory", str(mix_model), "-t", "Q8_0", "--imatrix", str(imatrix_file), "--target-size", str(size)]
    table, doc = runner.invoke(app, args), runner.invoke(app, [*args, "--json"])
    assert table.exit_code == 0 and doc.exit_code == 0, table.output + doc.output
    lines, doc = table.stdout.splitlines(), json.loads(doc.stdout)
    [plan] = doc["plans"]
    mib = plan["file_bytes"] / 2**20
    assert (f"budget mix {plan['label']} ({plan['target']}): {plan['file_bytes']:,} bytes ({mib:.2f} MiB), "
            f"{plan['bits_per_weight']} bpw, labelled {plan['file_type']}, damage {plan['error']:.4g}, "
            f"imatrix {plan['imatrix']}") in lines
    assert [r["type"] for r in doc["ladder"]] == list(LADDER)
    measured = [r for r in doc["ladder"] if r["damage"] is not None]
    shown = _rows_after(lines, "the standard types' damage by the same measure:")
    assert len(shown) == len(measured) > 3
    for (qtype, file_mib, bpw, damage), r in zip(shown, measured):
        assert (qtype, float(file_mib), float(bpw), damage) == (r["type"], round(r["file_bytes"] / 2**20, 2),
                                                                r["bits_per_weight"], f"{r['damage']:.4g}")
    layers = lines[lines.index(next(x for x in lines if x.split()[:1] == ["layer"])) + 1:]
    assert [line.split() for line in layers] == [list(r.values()) for r in layer_table(plan["types"])]


def assert_clean_failure(args: list[str], expect: str, out: Path) -> str:
    result = _quantize(*args, "-o", str(out))
    assert result.exit_code == 1, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert expect.lower() in err.lower(), err
    assert not out.exists() or list(out.iterdir()) == [], "something was left behind"
    return err


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(mix_model, imatrix_file, tmp_path):
    out = tmp_path / "out"
    err = assert_clean_failure([str(mix_model), "--target-size", "100K"], "below the smallest file", out)
    smallest = int(err.split("(")[1].split(" bytes")[0].replace(",", ""))
    assert 100_000 < smallest < mix_model.stat().st_size / 4 and "--imatrix" in err
    assert_clean_failure([str(mix_model), "--target-size", str(mix_model.stat().st_size + 1)],
                         "not below the base file", out)
    assert_clean_failure([str(mix_model), "--target-bpw", "17"], "not below the base", out)
    assert_clean_failure([str(mix_model), "-t", "IQ3_XXS"], "needs an importance matrix", out)
    assert_clean_failure([str(mix_model), "-t", "IQ4_XS,Q2_K_S,Q4_K_M"], "IQ4_XS and Q2_K_S need an", out)
    assert_clean_failure([str(mix_model), "--target-size", "12 apples"], "not a size", out)
    made = _quantize(str(mix_model), "-t", "Q8_0", "-o", str(tmp_path / "q8"))
    assert made.exit_code == 0, made.output
    assert_clean_failure([str(tmp_path / "q8" / "mix-Q8_0.gguf"), "-t", "Q4_K_M"], "not a float GGUF (Q8_0", out)
    assert_clean_failure([str(mix_model)], "nothing to make", out)
