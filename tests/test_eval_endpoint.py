"""`quantkit eval --endpoint` against a live `quantkit serve` on 127.0.0.1 gives, sample for sample, what the
in-process engine gives at temperature 0 (the scripted R1 model and SmolLM2 on arith), and a wrong API key is one
line with nothing written."""
from __future__ import annotations

import pytest

from quantkit.eval import read_samples
from quantkit.eval.runner import Protocol, evaluate
from quantkit.eval.tasks import arith_problems
from tests._fixtures.serve import start
from tests.test_bad_inputs import assert_clean_failure

pytestmark = pytest.mark.slow
FIELDS = ("problem_id", "sample", "seed", "reasoning", "answer", "gold", "extracted", "verdict", "prompt_tokens",
          "reasoning_tokens", "answer_tokens", "finish_reason")


def _samples(result) -> list[tuple]:
    return [tuple(getattr(s, f) for f in FIELDS) for s in sorted(read_samples(result.models[0].samples_file),
                                                                 key=lambda s: s.key)]


@pytest.mark.parametrize("model", ["scripted", "smollm2"])
def test_endpoint_equals_in_process(model, tmp_path, scripted_gguf, smollm2_gguf):
    path = scripted_gguf if model == "scripted" else smollm2_gguf
    problems = arith_problems(count=6 if model == "scripted" else 4)
    protocol = Protocol(temperature=0, max_tokens=48)
    local = evaluate([path], problems, "arith", protocol, out_dir=tmp_path / "local", parallel=1, n_ctx=1024,
                     n_gpu_layers=0, threads=1)
    with start(path, "--parallel", "1", "--ctx", "1024", "--threads", "1") as server:
        remote = evaluate([path.name], problems, "arith", protocol, out_dir=tmp_path / "remote",
                          endpoint=server.base + "/v1", parallel=1)
    assert _samples(remote) == _samples(local)
    if model == "scripted":
        assert all(s[FIELDS.index("extracted")] == "4" for s in _samples(local))


def test_wrong_api_key(tmp_path, scripted_gguf):
    with start(scripted_gguf, "--parallel", "1", "--ctx", "512", "--threads", "1", api_key="right") as server:
        assert_clean_failure(["eval", "m", "--endpoint", server.base + "/v1", "--api-key", "wrong", "--task",
                              "arith", "--limit", "1", "-o", str(tmp_path / "o")], "refused the API key")
    assert not list((tmp_path / "o").glob("*.jsonl"))
