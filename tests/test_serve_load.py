"""A bounded load on loopback: 200 requests at concurrency 32 against a live `quantkit serve` on the scripted model
(whose every reply is known, so each one is checked, not only counted) — chat and raw, streamed and not, greedy
and sampled, of mixed lengths, some cancelled mid-stream. No request may fail, and afterwards no slot or KV cell
may be left held (the server's /metrics, and llama.cpp's own count of cells agreeing with the engine's). Prints
p50/p99 latency and the aggregate generation rate."""
from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx
import pytest

from tests._fixtures import scripted as S
from tests._fixtures.serve import start

N_REQUESTS, CONCURRENCY = 200, 32
QUESTION = [{"role": "user", "content": "What is 2+2?"}]


async def _events(client: httpx.AsyncClient, path: str, body: dict, cancel_after: int | None = None):
    """The decoded events of a streamed reply; closes the connection after `cancel_after` of them."""
    events = []
    async with client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
                if cancel_after is not None and len(events) >= cancel_after:
                    return events
    assert events[-1] == "[DONE]"
    return events[:-1]


async def _one(client: httpx.AsyncClient, i: int) -> tuple[str, int]:
    """Request i of the mix; checks its reply and returns (kind, generated tokens)."""
    sampling = {"temperature": 0} if i % 2 else {"seed": i}
    kind = ("chat", "chat-stream", "loop-stream", "short", "cancelled")[i % 5]
    if kind == "chat":
        r = await client.post("/v1/chat/completions", json={"messages": QUESTION, **sampling})
        assert r.status_code == 200, r.text
        message = r.json()["choices"][0]["message"]
        assert (message["reasoning_content"], message["content"]) == (S.THOUGHT, S.ANSWER)
        return kind, r.json()["usage"]["completion_tokens"]
    if kind == "chat-stream":
        events = await _events(client, "/v1/chat/completions",
                               {"messages": QUESTION, "stream_options": {"include_usage": True}, **sampling})
        deltas = [e["choices"][0]["delta"] for e in events[1:-2]]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == S.THOUGHT
        assert "".join(d.get("content", "") for d in deltas) == S.ANSWER
        return kind, events[-1]["usage"]["completion_tokens"]
    if kind == "loop-stream":
        n = 1 + (i * 7) % 40
        events = await _events(client, "/v1/completions", {"prompt": S.LOOP_PROMPT, "max_tokens": n, **sampling})
        assert "".join(e["choices"][0]["text"] for e in events) == S.loop_text(n)
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        return kind, n
    if kind == "short":
        r = await client.post("/v1/completions", json={"prompt": S.SHORT_PROMPT, **sampling})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == S.SHORT_TEXT, r.text
        return kind, 2
    events = await _events(client, "/v1/completions", {"prompt": S.LOOP_PROMPT, "max_tokens": 400, **sampling},
                           cancel_after=3)
    assert len(events) == 3
    return kind, 0


@pytest.mark.slow
def test_200_requests_at_concurrency_32(scripted_gguf):
    with start(scripted_gguf, "--ctx", "8192", "--parallel", "8", "--threads", "1") as server:
        before = server.wait_idle()

        async def load():
            gate = asyncio.Semaphore(CONCURRENCY)
            limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
            async with httpx.AsyncClient(base_url=server.base, timeout=120, limits=limits) as client:
                async def timed(i):
                    async with gate:
                        t0 = time.perf_counter()
                        kind, tokens = await _one(client, i)
                        return kind, tokens, time.perf_counter() - t0

                t0 = time.perf_counter()
                results = await asyncio.gather(*(timed(i) for i in range(N_REQUESTS)), return_exceptions=True)
                return results, time.perf_counter() - t0

        results, wall = asyncio.run(load())
        failed = [r for r in results if isinstance(r, BaseException)]
        assert not failed, failed[:3]
        after = server.wait_idle()

    latencies = sorted(seconds for kind, _, seconds in results if kind != "cancelled")
    tokens = sum(n for _, n, _ in results)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)))]
    generated = after["quantkit_generated_tokens_total"] - before["quantkit_generated_tokens_total"]
    print(f"\n{N_REQUESTS} requests at concurrency {CONCURRENCY} in {wall:.1f} s: 0 failed, "
          f"{N_REQUESTS // 5} cancelled mid-stream; latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; "
          f"{tokens} tokens in finished replies, {generated:.0f} generated in all: {generated / wall:.0f} tok/s "
          f"aggregate; engine's own rate {after['quantkit_generation_tokens_per_second']:.0f} tok/s")
    assert after["quantkit_slots_busy"] == after["quantkit_kv_cells_used"] == after["quantkit_requests_waiting"] == 0
    assert after["quantkit_kv_cells_llama"] == after["quantkit_kv_cells_cached"]  # llama.cpp agrees: no leak
    assert after['quantkit_generations_total{reason="failed"}'] == 0
    ok = sum(v for k, v in after.items() if k.startswith('quantkit_requests_total{endpoint="/v1/')
             and k.endswith('status="200"}'))
    assert ok == N_REQUESTS
    finished = {k: after[k] - before.get(k, 0) for k in after if k.startswith("quantkit_generations_total")}
    assert finished['quantkit_generations_total{reason="cancelled"}'] == N_REQUESTS // 5
