"""Parse once, pass data: a command reads each GGUF header it needs once and hands the parsed header down.

`gguf.header.parse_header` is the one parser every header read goes through (local files, shards, remote ones);
these tests count its calls per file while a command runs."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from tests._fixtures.memory import MIX_MODEL, write_random_imatrix
from tests._fixtures.memory import mix_model as build_mix_model

runner = CliRunner()


@pytest.fixture
def parses(monkeypatch) -> collections.Counter:
    """file name → how many times its header was parsed."""
    from quantkit.gguf import header

    counts: collections.Counter = collections.Counter()
    real = header.parse_header

    def counting(f, name, file_size=None):
        counts[Path(name).name] += 1
        return real(f, name, file_size)

    monkeypatch.setattr(header, "parse_header", counting)
    return counts


@pytest.fixture(scope="module")
def base() -> Path:
    return build_mix_model()


@pytest.fixture(scope="module")
def imatrix_file(base, tmp_path_factory) -> Path:
    return write_random_imatrix(tmp_path_factory.mktemp("imatrix") / "imatrix.gguf", base)


@pytest.mark.slow
def test_quantize_parses_each_header_once(base, imatrix_file, tmp_path, parses):
    size = int(base.stat().st_size * 0.3)
    args = ["quantize", str(base), "--imatrix", str(imatrix_file), "--target-size", str(size), "-t", "Q4_0",
            "--threads", "1", "-o", str(tmp_path), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    files = [Path(f["path"]).name for f in json.loads(result.stdout)["files"]]
    assert files == ["mix-Q4_0.gguf", f"mix-MIX-{size}.gguf"]
    # the base and the imatrix once each; the mix once, as libllama wrote it (under its temporary name), to check
    # it against the plan; Q4_0's file is libllama's own and not read back
    written = [name for name in parses if name not in (base.name, imatrix_file.name)]
    assert len(written) == 1 and written[0].startswith(f".mix-MIX-{size}.gguf"), parses
    assert parses == {base.name: 1, imatrix_file.name: 1, written[0]: 1}, parses
    assert sum(parses.values()) == 3

    # a second run keeps both files: each is read once to see that it is complete, the base and imatrix once
    parses.clear()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert parses == {base.name: 1, imatrix_file.name: 1, "mix-Q4_0.gguf": 1, f"mix-MIX-{size}.gguf": 1}, parses


@pytest.mark.slow
def test_loading_with_auto_gpu_layers_parses_the_header_once(base, monkeypatch, parses):
    """`-ngl auto` sizes the offload from the header the load already read (a GPU with 24 GiB free is faked,
    so that 'auto' asks the estimator; this build runs on the CPU whatever it is told)."""
    from quantkit import runtime
    from quantkit.runtime import offload

    monkeypatch.setattr(runtime, "gpu_devices", lambda: [runtime.Device("GPU", "gpu", 24 << 30, 24 << 30, "GPU0")])
    asked = []
    real = offload.auto_gpu_layers
    monkeypatch.setattr(offload, "auto_gpu_layers", lambda *a, **k: asked.append(a) or real(*a, **k))
    with offload.load_model(base, "auto", n_ctx=256) as model:
        assert model.n_gpu_layers == MIX_MODEL.n_layer + 1  # everything fits
    assert asked, "'auto' did not reach the estimator"
    assert parses == {base.name: 1}, parses
