"""Bad requests against a live `quantkit serve`: each gets its status and an error in OpenAI's shape
`{"error": {"message", "type", "code"}}` naming what is wrong, never a traceback; the key guards everything but
/health and /v1/models; a full queue is 503 with Retry-After; the server keeps serving afterwards."""
from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from tests._fixtures import scripted as S
from tests._fixtures.serve import start

KEY = "sk-test-1234"
CTX = 65536  # large enough that an endless generation holds its slot for the queue test
GOOD = {"messages": [{"role": "user", "content": "What is 2+2?"}], "temperature": 0}


@pytest.fixture(scope="module")
def server(scripted_gguf):
    # one slot and a queue of one, so that the test of a full queue needs only three requests
    with start(scripted_gguf, "--ctx", str(CTX), "--parallel", "1", "--max-queue", "1", "--threads", "1",
               "--max-body-mib", "1", api_key=KEY) as s:
        yield s


def _error(r: httpx.Response, status: int, kind: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["type"] == kind and error["code"] == status and error["message"]
    assert "Traceback" not in r.text
    return error


BAD = {
    "bad JSON": (b'{"messages": [', "not valid JSON"),
    "not an object": (b'[1, 2]', "body"),
    "no messages": (json.dumps({"temperature": 0}).encode(), "messages: Field required"),
    "empty messages": (json.dumps({"messages": []}).encode(), "messages: List should have at least 1 item"),
    "unknown role": (json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode(), "messages.0.role"),
    "content of a wrong type": (json.dumps({"messages": [{"role": "user", "content": 42}]}).encode(),
                                "messages.0.content"),
    "temperature as a string": (json.dumps({**GOOD, "temperature": "0.5"}).encode(), "temperature"),
    "temperature out of range": (json.dumps({**GOOD, "temperature": 7}).encode(), "temperature"),
    "negative max_tokens": (json.dumps({**GOOD, "max_tokens": -5}).encode(), "max_tokens"),
    "zero max_completion_tokens": (json.dumps({**GOOD, "max_completion_tokens": 0}).encode(), "max_completion_tokens"),
    "stream not a bool": (json.dumps({**GOOD, "stream": "yes"}).encode(), "stream"),
    "stop of a wrong type": (json.dumps({**GOOD, "stop": 3}).encode(), "stop"),
    "n of 0": (json.dumps({**GOOD, "n": 0}).encode(), "n: Input should be greater than or equal to 1"),
    "functions": (json.dumps({**GOOD, "functions": [{"name": "f"}]}).encode(),
                  "functions: function calls are not supported"),
    "top_logprobs without logprobs": (json.dumps({**GOOD, "top_logprobs": 2}).encode(), "top_logprobs: needs logprobs"),
    "logit_bias of a word": (json.dumps({**GOOD, "logit_bias": {"hello": 5}}).encode(), "logit_bias"),
    "top_p of 0": (json.dumps({**GOOD, "top_p": 0}).encode(), "top_p"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_body_is_400_naming_the_field(server, case):
    body, named = BAD[case]
    r = server.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert named in _error(r, 400, "invalid_request_error")["message"]


def test_bad_completion_body(server):
    cases = (({"prompt": 5}, "prompt"), ({"prompt": ["a", "b"]}, "one prompt"), ({}, "prompt"),
             ({"prompt": [1, 2, 10**9]}, "token id 1000000000"), ({"prompt": [-1]}, "token id -1"))
    for body, named in cases:
        assert named in _error(server.post("/v1/completions", json=body), 400, "invalid_request_error")["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_prompt_over_the_context_is_400_before_any_byte(server, stream):
    body = {"messages": [{"role": "user", "content": "two " * (CTX + 10)}], "stream": stream}
    error = _error(server.post("/v1/chat/completions", json=body), 400, "exceed_context_size_error")
    assert error["n_ctx"] == CTX and error["n_prompt_tokens"] > CTX
    _error(server.post("/v1/completions", json={"prompt": "two " * (CTX + 10), "stream": stream}), 400,
           "exceed_context_size_error")


def test_the_openai_client_sees_the_errors(server):
    client = server.openai()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "two " * (CTX + 10)}])
    assert e.value.body["type"] == "exceed_context_size_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model="x", messages=GOOD["messages"])


def test_body_over_the_limit_is_413(server):
    r = server.post("/v1/chat/completions", content=b'{"messages": "' + b"x" * (20 * 2**20) + b'"}',
                    headers={"content-type": "application/json"})
    assert "larger than" in _error(r, 413, "invalid_request_error")["message"]


def test_chunked_body_over_the_limit_is_413(server):
    def chunks():
        for _ in range(40):
            yield b"x" * 2**16  # 2.5 MiB in all, no Content-Length

    _error(server.post("/v1/chat/completions", content=chunks()), 413, "invalid_request_error")


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic " + KEY, KEY], ids=["missing", "wrong", "basic", "bare"])
def test_wrong_or_missing_key_is_401(server, auth):
    headers = {"Authorization": auth} if auth else {}
    for path in ("/v1/chat/completions", "/v1/completions"):
        r = httpx.post(server.base + path, json=GOOD, headers=headers)
        _error(r, 401, "authentication_error")
    _error(httpx.get(server.base + "/metrics", headers=headers), 401, "authentication_error")


def test_health_and_models_are_public(server):
    assert httpx.get(server.base + "/health").json() == {"status": "ok"}
    assert httpx.get(server.base + "/v1/models").json()["data"][0]["id"] == f"{S.NAME}-BF16.gguf"


def test_unknown_route_and_method(server):
    _error(httpx.get(server.base + "/v1/nothing"), 404, "not_found_error")
    _error(httpx.post(server.base + "/v2/chat/completions", json=GOOD), 404, "not_found_error")
    assert httpx.get(server.base + "/v1/chat/completions", headers=server.headers).status_code == 405


def test_full_queue_is_503_with_retry_after(server):
    """One slot busy with an endless loop, one request waiting: the third is refused at once."""
    loop = {"prompt": S.LOOP_PROMPT, "temperature": 0}
    stop = threading.Event()
    statuses = []

    def hold():
        with httpx.stream("POST", server.base + "/v1/completions", json={**loop, "stream": True},
                          headers=server.headers, timeout=60) as r:
            statuses.append(r.status_code)
            for _ in r.iter_lines():
                if stop.is_set():
                    return

    threads = [threading.Thread(target=hold) for _ in range(2)]
    try:
        for t in threads:
            t.start()
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while (m := server.metrics())["quantkit_requests_waiting"] < 1 or m["quantkit_slots_busy"] < 1:
            assert time.monotonic() < deadline, m
            time.sleep(0.02)
        r = server.post("/v1/completions", json=loop)
        error = _error(r, 503, "unavailable_error")
        assert r.headers["retry-after"] == "1" and "busy" in error["message"]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses == [200, 200]
    server.wait_idle()


def test_still_serving_after_all_that(server):
    r = server.post("/v1/chat/completions", json=GOOD)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == S.ANSWER
    m = server.wait_idle()
    assert m['quantkit_requests_total{endpoint="/v1/chat/completions",status="400"}'] >= len(BAD)
    assert m['quantkit_requests_total{endpoint="/v1/chat/completions",status="413"}'] >= 1
    assert m['quantkit_requests_total{endpoint="/v1/chat/completions",status="401"}'] >= 4
