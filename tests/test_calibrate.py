"""The KLD calibration of the damage measure (quantize/calibrate.py) against an independent computation: for each
tensor of the tiny mix model, a file that libllama's own quantizer wrote with only that tensor at the probe type
(every other one left F16 by a tensor-type override), run through libllama on the same tokens, and the
KL-divergence from the base over the whole vocabulary computed here in float64. The calibrated errors must order
the tensors exactly as those KLDs do; plans on calibrated errors are still the solver's (test_mixes checks it
against brute force); the calibration is cached; `--calibrate` reaches the file's metadata."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T, GGUFReader
from typer.testing import CliRunner

from quantkit import runtime
from quantkit.cli.app import app
from quantkit.imatrix import load_imatrix
from quantkit.quantize.calibrate import Calibration, calibrate, calibrated, probe_type
from quantkit.quantize.damage import measure
from quantkit.quantize.mixes import KEY_DAMAGE, Target, plan_mix
from tests._fixtures.memory import mix_model as build_mix_model
from tests._fixtures.memory import write_random_imatrix

pytestmark = pytest.mark.slow

N_CTX, CHUNKS = 64, 2


@pytest.fixture(scope="module")
def mix_model() -> Path:
    return build_mix_model()


@pytest.fixture(scope="module")
def importance(mix_model, tmp_path_factory) -> dict[str, np.ndarray]:
    return load_imatrix(write_random_imatrix(tmp_path_factory.mktemp("imatrix") / "imatrix.gguf", mix_model))


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 512, N_CTX * CHUNKS).astype(np.int32)


@pytest.fixture(scope="module")
def calibration(mix_model, importance, tokens, tmp_path_factory) -> tuple[list, Calibration]:
    measured = measure(mix_model, importance, sample_values=1 << 20)
    return measured, calibrate(mix_model, measured, importance, tokens, n_ctx=N_CTX, chunks=CHUNKS, threads=1,
                               cache=False)


def _log_probs(path: Path, tokens: np.ndarray) -> np.ndarray:
    """log p of every position llama-perplexity scores (n_ctx/2 … n_ctx−2 of each chunk), float64."""
    out = []
    with runtime.load_model(path, 0) as model, runtime.create_context(model, N_CTX, N_CTX, threads=1) as ctx, \
            runtime.Batch(N_CTX) as batch:
        for c in range(CHUNKS):
            chunk = tokens[c * N_CTX:(c + 1) * N_CTX].copy()
            if model.add_bos:
                chunk[0] = model.bos
            pos = np.arange(N_CTX, dtype=np.int32)
            wanted = (pos >= N_CTX // 2) & (pos <= N_CTX - 2)
            ctx.clear()
            batch.set(chunk, pos, np.zeros(N_CTX, np.int32), wanted)
            ctx.decode(batch)
            logits = ctx.output_logits(int(wanted.sum())).astype(np.float64)
            m = logits.max(axis=1, keepdims=True)
            out.append(logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))
    return np.concatenate(out)


def test_calibrated_errors_order_tensors_as_their_own_kld(mix_model, importance, tokens, calibration, tmp_path):
    measured, cal = calibration
    planned = [t.name for t in measured]
    assert set(cal.kld) == set(planned) and all(cal.probe[n] == "Q4_0" for n in planned)
    base = _log_probs(mix_model, tokens)
    reference = {}
    for name in planned:  # each tensor alone at the probe type, by libllama's quantizer
        path = tmp_path / f"{name}.gguf"
        types = {n: int(T.Q4_0 if n == name else T.F16) for n in planned}
        rc, lines = runtime.model_quantize(mix_model, path, 7, threads=1, imatrix=importance, tensor_types=types)
        assert rc == 0, lines[-3:]
        assert {t.name: t.tensor_type for t in GGUFReader(path).tensors if t.name in types}[name] == T.Q4_0
        q = _log_probs(path, tokens)
        reference[name] = float((np.exp(base) * (base - q)).sum(axis=1).mean())
        path.unlink()
    predicted = {t.name: next(o.error for o in t.options if o.type == "Q4_0") for t in calibrated(measured, cal)}
    assert sorted(planned, key=predicted.get) == sorted(planned, key=reference.get), (predicted, reference)
    for name in planned:  # the same quantity, up to the F16 rounding of the probe and libllama's Q8 activations
        assert predicted[name] == pytest.approx(reference[name], rel=0.1), name
    assert max(reference.values()) > 10 * min(reference.values())  # an order worth checking


def test_calibration_scales_each_tensor_and_keeps_the_solver(mix_model, importance, calibration):
    measured, cal = calibration
    weights = cal.weights()
    scaled = {t.name: t for t in calibrated(measured, cal)}
    for t in measured:
        for raw, new in zip(t.options, scaled[t.name].options):
            assert (raw.type, raw.n_bytes) == (new.type, new.n_bytes)
            assert new.error == pytest.approx(raw.error * weights[t.name], rel=1e-12)
    assert len({round(np.log10(w), 1) for w in weights.values()}) > 3  # the tensors are weighted differently
    target = Target(size=int(mix_model.stat().st_size * 0.4))
    plan = plan_mix(mix_model, target, importance, measured=measured, calibration=cal)
    assert plan.calibration == cal.digest and plan.kv()[KEY_DAMAGE] == f"kld:{cal.digest}"
    assert plan.error == pytest.approx(sum(next(o.error for o in scaled[n].options if o.type == ty)
                                           for n, ty in plan.overrides.items()))
    assert plan.file_bytes <= target.size
    assert KEY_DAMAGE not in plan_mix(mix_model, target, importance, measured=measured).kv()


def test_probe_type_falls_back_where_q4_0_does_not_fit():
    from quantkit.quantize.damage import Option, TensorOptions

    odd = TensorOptions("blk.0.ffn_down.weight", (336, 256), "F16", [Option("Q8_0", 10, 1.0), Option("F16", 20, 0.0)])
    assert probe_type(odd) == "Q8_0"
    assert probe_type(TensorOptions("x", (336, 256), "F16", [Option("F16", 20, 0.0)])) is None


def test_calibration_is_cached(mix_model, importance, tokens, monkeypatch, tmp_path):
    from quantkit.quantize import calibrate as module

    monkeypatch.setenv("QUANTKIT_CACHE", str(tmp_path))
    measured = measure(mix_model, importance, types=[T.Q4_0, T.Q8_0])
    first = calibrate(mix_model, measured, importance, tokens, n_ctx=N_CTX, chunks=1, threads=1)
    assert list((tmp_path / "calibration").iterdir()) == [tmp_path / "calibration" / f"mix-F16-{first.digest}.json"]
    monkeypatch.setattr(module, "_probe_all", lambda *a, **k: pytest.fail("the cached calibration was not used"))
    again = calibrate(mix_model, measured, importance, tokens, n_ctx=N_CTX, chunks=1, threads=1)
    assert again == first
    other = tokens[::-1].copy()  # another text is another calibration
    monkeypatch.undo()
    monkeypatch.setenv("QUANTKIT_CACHE", str(tmp_path))
    assert calibrate(mix_model, measured, importance, other, n_ctx=N_CTX, chunks=1, threads=1).digest != first.digest


def test_quantize_calibrate_writes_the_calibration_into_the_mix(tmp_path, monkeypatch):
    """`quantize --calibrate` on a model with a real vocabulary (python-docs' calibration text tokenized by it);
    a second run keeps the file, a run without --calibrate replans it."""
    from tests._fixtures.bad_inputs import good_inputs

    monkeypatch.setenv("QUANTKIT_CACHE", str(tmp_path / "cache"))
    base = good_inputs().model
    args = ["quantize", str(base), "--target-bpw", "6", "--threads", "1", "-o", str(tmp_path / "out"), "--json"]
    runner = CliRunner()
    made = runner.invoke(app, [*args, "--calibrate", "python-docs"])
    assert made.exit_code == 0, made.output
    [f] = json.loads(made.stdout)["files"]
    kv = {k: bytes(v.parts[-1]).decode() for k, v in GGUFReader(f["path"]).fields.items() if k == KEY_DAMAGE}
    [cached] = (tmp_path / "cache" / "calibration").iterdir()
    assert kv == {KEY_DAMAGE: f"kld:{cached.stem.rsplit('-', 1)[1]}"}
    again = runner.invoke(app, [*args, "--calibrate", "python-docs"])
    assert again.exit_code == 0 and not json.loads(again.stdout)["files"][0]["made"], again.output
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0 and json.loads(plain.stdout)["files"][0]["made"], plain.output
    assert KEY_DAMAGE not in {k for k in GGUFReader(f["path"]).fields}
