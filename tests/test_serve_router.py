"""One server for many GGUFs: three SmolLM2 rungs (requantized by quantkit, tests/_fixtures/rungs.py) in a folder
with a run's report.json, and a model that libllama cannot load, behind `quantkit serve FOLDER BROKEN.gguf
--max-loaded 2`, with the real `openai` client and httpx on 127.0.0.1.

What must hold: every model is listed with its size, type, bpw and the report's figures; requests rotating over
the rungs all answer and never more than two are loaded (`/metrics`); a model with a request running is never the
one unloaded (a long generation in flight finishes whole while the others come and go); the broken model is one
OpenAI-shaped error and the others keep working.
"""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests._fixtures.bad_inputs import good_inputs, set_string_value
from tests._fixtures.rungs import NAME, smollm2_rungs
from tests._fixtures.serve import start

pytestmark = pytest.mark.slow

TYPES = ("Q4_0", "Q5_0", "Q8_0")
IDS = [f"{NAME}-{t}" for t in TYPES]
BROKEN = "broken-arch"
SCORES = {"Q4_0": (18.5, 0.21, 0.4), "Q5_0": (17.9, 0.12, 0.5), "Q8_0": (17.6, 0.01, 0.6)}  # the report's rows


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from quantkit.share.report import ReportFacts, as_dict

    folder = tmp_path_factory.mktemp("router")
    ladder = folder / "ladder"
    ladder.mkdir()
    rows = []
    for rung, qtype in zip(smollm2_rungs(TYPES), TYPES):
        (ladder / rung.name).symlink_to(rung)
        ppl, kld, passed = SCORES[qtype]
        rows.append({"type": qtype, "file": rung.name, "ppl": ppl, "mean_kld": kld, "pass_at_1": passed})
    (ladder / "report.json").write_text(json.dumps(as_dict(ReportFacts(recipe={"name": "t"}, rows=rows))))
    broken = folder / f"{BROKEN}.gguf"
    data = bytearray(good_inputs().model.read_bytes())
    set_string_value("general.architecture", "lxama")(data)  # a header that reads, a model libllama refuses
    broken.write_bytes(bytes(data))
    with start([ladder, broken], "--ctx", "512", "--parallel", "1", "--threads", "1", "--max-loaded", "2") as s:
        yield s


def _models(server) -> dict[str, dict]:
    return {m["id"]: m for m in httpx.get(server.base + "/v1/models").json()["data"]}


def _ask(server, model: str, max_tokens: int = 4, **kwargs):
    return server.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count from 1 to 100, separated by commas."}],
        temperature=0, max_tokens=max_tokens, **kwargs)


def _loaded(server) -> float:
    return server.metrics()["quantkit_models_loaded"]


def test_every_model_is_listed_with_its_figures(server):
    models = _models(server)
    assert sorted(models) == sorted([*IDS, BROKEN])
    for model_id, qtype in zip(IDS, TYPES):
        m = models[model_id]
        ppl, kld, passed = SCORES[qtype]
        assert (m["type"], m["ppl"], m["mean_kld"], m["pass_at_1"]) == (qtype, ppl, kld, passed)
        assert m["size_bytes"] > 0 and 4 < m["bpw"] < 9 and m["memory_bytes"] > m["size_bytes"]
    assert models[IDS[0]]["bpw"] < models[IDS[1]]["bpw"] < models[IDS[2]]["bpw"]
    assert "ppl" not in models[BROKEN]


def test_rotating_requests_all_answer_and_two_at_most_are_loaded(server):
    for model in IDS * 2:
        r = _ask(server, model)
        assert r.model == model and r.choices[0].message.content and r.usage.completion_tokens == 4
        assert _loaded(server) <= 2
    m = server.metrics()
    assert sum(m[f'quantkit_model_unloads_total{{model="{i}"}}'] for i in IDS) >= 4  # each turn evicted one
    assert m[f'quantkit_generated_tokens_total{{model="{IDS[2]}"}}'] > 0  # the engine's own numbers, per model


class LongGeneration(threading.Thread):
    """A raw completion of a pattern SmolLM2 goes on with (about 30 s of tokens), streamed until `stop()`."""

    def __init__(self, server, model: str):
        super().__init__(daemon=True)
        self.server, self.model = server, model
        self.chunks, self.finish, self.error = 0, None, None
        self.started, self._stopping = threading.Event(), threading.Event()

    def run(self) -> None:
        try:
            with self.server.openai().completions.create(model=self.model, prompt="0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1",
                                                         max_tokens=1500, temperature=0, stream=True) as stream:
                for chunk in stream:
                    self.chunks += 1
                    self.finish = chunk.choices[0].finish_reason if chunk.choices else self.finish
                    self.started.set()
                    if self._stopping.is_set():
                        return  # closing the stream cancels the generation
        except Exception as e:  # noqa: BLE001 - the test reads it
            self.error = e

    def stop(self) -> None:
        self._stopping.set()
        self.join(60)


def _wait(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_an_unload_never_hits_a_running_request(server):
    a, b, c = IDS
    _ask(server, b)  # b loaded (and idle) beside whatever else
    first = LongGeneration(server, a)
    first.start()
    assert first.started.wait(120)
    # a runs: c evicts b, then b evicts c; never a, whose stream goes on
    for model in (c, b):
        before = first.chunks
        assert _ask(server, model).choices[0].message.content
        assert _models(server)[a]["status"]["value"] == "loaded" and _loaded(server) <= 2
        _wait(lambda: first.chunks > before, "the running generation stalled")  # noqa: B023
    busy = server.post("/models/unload", json={"model": a})
    assert busy.status_code == 409 and busy.json()["error"]["type"] == "conflict_error"
    # both loaded models busy: a request for the third waits, unloaded, until one of them ends
    second = LongGeneration(server, b)
    second.start()
    assert second.started.wait(120)
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(_ask(server, c)), daemon=True)
    waiting.start()
    _wait(lambda: _models(server)[c]["status"]["active_requests"] == 1, "the request for c did not come")
    assert _models(server)[c]["status"]["value"] == "unloaded" and not answers
    assert first.is_alive() and second.is_alive() and first.error is second.error is None
    first.stop()
    waiting.join(120)
    assert answers and answers[0].choices[0].message.content
    second.stop()
    assert first.error is second.error is None and first.finish is second.finish is None  # cut by us, not ended
    assert _loaded(server) <= 2


def test_a_model_that_fails_to_load_is_one_error_and_the_others_work(server):
    r = server.post("/v1/chat/completions", json={"model": BROKEN, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["type"] == "server_error" and "failed to load" in error["message"] and error["param"] == "model"
    status = _models(server)[BROKEN]["status"]
    assert status["value"] == "failed" and status["error"]
    assert _ask(server, IDS[0]).choices[0].message.content
    assert server.metrics()[f'quantkit_model_loaded{{model="{BROKEN}"}}'] == 0


def test_load_and_unload_by_hand(server):
    model = IDS[1]
    loaded = server.post("/models/load", json={"model": model})
    assert loaded.status_code == 200 and loaded.json()["model"]["status"]["value"] == "loaded"
    assert loaded.json()["model"]["status"]["load_seconds"] is not None
    unloaded = server.post("/models/unload", json={"model": model})
    assert unloaded.status_code == 200 and _models(server)[model]["status"]["value"] == "unloaded"
    unknown = server.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    anonymous = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert anonymous.status_code == 400 and anonymous.json()["error"]["param"] == "model"


def test_sigterm_stops_the_router_cleanly(tmp_path):
    rungs = smollm2_rungs(TYPES[:2])
    with start(rungs, "--ctx", "512", "--parallel", "1", "--threads", "1") as s:
        for model in IDS[:2]:
            assert _ask(s, model).choices[0].message.content
        assert _loaded(s) == 2
        assert s.stop() == 0, s.stderr
        assert "Traceback" not in s.stderr and "stopped" in s.stderr


def test_max_memory_keeps_one_of_two_and_refuses_a_model_past_it(tmp_path):
    rungs = smollm2_rungs(TYPES[:2])  # each needs about 200-250 MiB at --ctx 512: 300 MiB holds one
    with start(rungs, "--ctx", "512", "--parallel", "1", "--threads", "1", "--max-memory", "300MiB") as s:
        needs = [m["memory_bytes"] for m in _models(s).values()]
        assert max(needs) <= 300 * 2**20 < sum(needs)
        for model in IDS[:2] * 2:
            assert _ask(s, model).choices[0].message.content
            assert _loaded(s) == 1
        assert s.metrics()["quantkit_memory_budget_bytes"] == 300 * 2**20
    (tmp_path / rungs[0].name).symlink_to(rungs[0])  # a folder: the router, even for one model
    with start(tmp_path, "--ctx", "512", "--threads", "1", "--max-memory", "50MiB") as s:
        r = s.post("/v1/chat/completions", json={"model": IDS[0], "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and "--max-memory" in r.json()["error"]["message"]


def test_responses_and_cors_go_through_the_router(tmp_path):
    """/v1/responses is dispatched by its `model` like chat; CORS is answered once, by the router (a second
    Access-Control-Allow-Origin from the model's own app would make browsers refuse the answer)."""
    origin = "http://127.0.0.1:5173"
    rungs = smollm2_rungs(TYPES[:2])
    with start(rungs, "--ctx", "512", "--parallel", "1", "--threads", "1", "--cors-origin", origin) as s:
        r = s.post("/v1/responses", json={"model": IDS[1], "input": "Say hi.", "max_output_tokens": 4,
                                          "temperature": 0}, headers={"Origin": origin})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == IDS[1] and r.headers["x-quantkit-model"] == IDS[1]
        assert r.headers.get_list("access-control-allow-origin") == [origin]
        preflight = httpx.options(s.base + "/v1/chat/completions",
                                  headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin
