"""`quantkit ollama MODEL.gguf`: the Modelfile beside the file (R1's template in Ollama's syntax, DeepSeek's stop
tokens and sampling, num_ctx from the memory estimate), and `ollama create` run by a fake `ollama` on PATH that
records what it was given."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.memory import estimate_memory
from quantkit.share.ollama import STOP_TOKENS, model_name, r1_template
from quantkit.gguf.split import split_gguf

runner = CliRunner()


def _fake_ollama(bin_dir: Path, log: Path, exit_code: int = 0) -> None:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "ollama"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$PWD\" \"$@\" > {log}\n"
                      f"[ {exit_code} -eq 0 ] || echo 'Error: unsupported model format' >&2\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def model(tmp_path, scripted_gguf) -> Path:
    dest = tmp_path / "models" / "DeepSeek-R1-Distill-Qwen-Tiny-BF16.gguf"
    dest.parent.mkdir()
    shutil.copy(scripted_gguf, dest)
    return dest


def _modelfile(path: Path) -> dict:
    text = (path.parent / "Modelfile").read_text()
    params: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("PARAMETER "):
            key, value = line.removeprefix("PARAMETER ").split(" ", 1)
            params.setdefault(key, []).append(value)
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    return {"from": froms, "template": template, "params": params}


def test_modelfile_and_ollama_create(model, tmp_path, monkeypatch):
    log = tmp_path / "ollama-args"
    _fake_ollama(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    result = runner.invoke(app, ["ollama", str(model), "--vram", "1", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    m = _modelfile(model)
    assert m["from"] == [f"FROM ./{model.name}"]
    assert m["params"]["stop"] == [f'"{s}"' for s in STOP_TOKENS]
    assert m["params"]["temperature"] == ["0.6"] and m["params"]["top_p"] == ["0.95"]
    fit = estimate_memory(str(model), ["BF16"], n_ctx=4096, vram_gib=[1]).types[0].fit
    assert int(m["params"]["num_ctx"][0]) == min(fit.max_ctx, 131072) // 1024 * 1024 == out["num_ctx"]
    # the scripted model's template opens the thought: so does the Modelfile's
    assert m["template"] == r1_template(think=True) and "<｜Assistant｜><think>\n{{ end }}" in m["template"]
    assert out["created"] and out["name"] == "deepseek-r1-distill-qwen-tiny:bf16"
    cwd, *args = log.read_text().splitlines()
    assert Path(cwd) == model.parent and args == ["create", "deepseek-r1-distill-qwen-tiny:bf16", "-f", "Modelfile"]


def test_template_follows_the_models_own(tmp_path, scripted_bare_gguf, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no ollama: the Modelfile only, and the command to run
    model = shutil.copy(scripted_bare_gguf, tmp_path / "Bare-BF16.gguf")
    result = runner.invoke(app, ["ollama", str(model), "--name", "r1:bare"])
    assert result.exit_code == 0, result.output
    assert "ollama create r1:bare -f Modelfile" in result.stdout
    m = _modelfile(Path(model))
    assert m["template"] == r1_template(think=False) and "<think>" not in m["template"]
    assert m["params"]["num_ctx"] == ["8192"]  # no --vram: quantkit chat's context


def test_ollama_failure_and_refusals(model, tmp_path, monkeypatch):
    _fake_ollama(tmp_path / "bin", tmp_path / "log", exit_code=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    failed = runner.invoke(app, ["ollama", str(model)])
    assert failed.exit_code == 1 and failed.stderr.count("\n") == 1
    assert "ollama create deepseek-r1-distill-qwen-tiny:bf16 failed: Error: unsupported model format" in failed.stderr
    too_small = runner.invoke(app, ["ollama", str(model), "--vram", "0.1", "--no-create"])
    assert too_small.exit_code == 1 and "does not fit" in too_small.stderr
    shards = split_gguf(model, max_tensors=5)
    refused = runner.invoke(app, ["ollama", str(shards[1]), "--no-create"])
    assert refused.exit_code == 1 and "ollama/ollama#5245" in refused.stderr


def test_model_name():
    assert model_name(Path("DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf")) == "deepseek-r1-distill-qwen-7b:q4_k_m"
    assert model_name(Path("X-Q8_0-00001-of-00003.gguf")) == "x:q8_0"
