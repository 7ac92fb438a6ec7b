"""A real model (SmolLM2-135M-Instruct) through a live `quantkit serve` and the `openai` client: greedy answers
equal to llama-cpp-python's own `Llama` on the same file (chat and raw), streamed and not; and batching that
changes nothing — the same prompts at temperature 0 give the same text sent 8 at once as sent one by one."""
from __future__ import annotations

import asyncio

import pytest

from tests._fixtures.llama_reference import reference_llama
from tests._fixtures.serve import start

QUESTIONS = ["What is the capital of France?", "Name three colours.", "What is 2 + 2?", "Say hello in Spanish.",
             "What do bees make?", "Which planet is the largest?", "What is water made of?", "Count to five."]
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def reference(smollm2_gguf):
    # flash attention on, as libllama's default context (which the engine keeps) has it on the CPU: with it off
    # SmolLM2's greedy answer below parts from ours at its 5th token (a near tie that the other summation order flips)
    llm = reference_llama(smollm2_gguf, n_ctx=512, n_gpu_layers=0, flash_attn=True)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def server(smollm2_gguf):
    # one thread: on a machine whose cores are shared, ggml's spinning thread barrier makes 2 threads 40x slower
    # decodes of at most 32 tokens: past 64 or so, llama.cpp's CPU kernels take another path and a prompt decoded
    # beside others gets other logits than alone (tests/test_engine.py measures it), which flips SmolLM2's near ties
    with start(smollm2_gguf, "--ctx", "4096", "--parallel", "8", "--threads", "1", "--batch", "32") as s:
        yield s


def _ask(client, question: str, **kwargs):
    return client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": question}],
                                          temperature=0, max_tokens=MAX_TOKENS, **kwargs)


def test_answer_streamed_and_not_agree_with_llama_cpp(server, reference):
    client = server.openai()
    r = _ask(client, QUESTIONS[0])
    message = r.choices[0].message
    expected = reference.create_chat_completion([{"role": "user", "content": QUESTIONS[0]}], temperature=0,
                                                max_tokens=MAX_TOKENS)
    assert message.content == expected["choices"][0]["message"]["content"]
    assert r.usage.prompt_tokens == expected["usage"]["prompt_tokens"]
    assert getattr(message, "reasoning_content", None) is None  # no <think> template, no thought
    assert r.usage.completion_tokens_details.reasoning_tokens == 0 and r.usage.completion_tokens <= MAX_TOKENS
    chunks = list(_ask(client, QUESTIONS[0], stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == message.content
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert chunks[-2].choices[0].finish_reason == r.choices[0].finish_reason


def test_raw_completion_agrees_with_llama_cpp(server, reference):
    prompt = "The capital of France is"
    r = server.openai().completions.create(model="smollm2", prompt=prompt, temperature=0, max_tokens=8)
    expected = reference.create_completion(prompt, temperature=0, max_tokens=8)
    assert r.choices[0].text == expected["choices"][0]["text"] and r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (expected["usage"]["prompt_tokens"], 8)


def test_next_turn_reuses_the_cached_prefix(server):
    client = server.openai()
    first = _ask(client, QUESTIONS[2])
    messages = [{"role": "user", "content": QUESTIONS[2]},
                {"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "And 3 + 3?"}]
    second = client.chat.completions.create(model="smollm2", messages=messages, temperature=0, max_tokens=4)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens


def test_eight_at_once_equal_one_by_one(server):
    client = server.openai()
    alone = [_ask(client, q).choices[0].message.content for q in QUESTIONS]

    async def together():
        aclient = server.async_openai()
        replies = await asyncio.gather(*(aclient.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": q}], temperature=0, max_tokens=MAX_TOKENS)
            for q in QUESTIONS))
        await aclient.close()
        return [r.choices[0].message.content for r in replies]

    batched = asyncio.run(together())
    for i, (a, b) in enumerate(zip(alone, batched)):
        if a != b:
            at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            print(f"prompt {i}: alone and batched part at character {at}: {a[at:at + 20]!r} / {b[at:at + 20]!r}")
    # Requests arrive over HTTP at their own moments, so how the server batches them varies from run to run; a
    # prompt decoded in another company can flip one of SmolLM2's near ties (tests/test_engine.py measures where:
    # with the requests queued together, the engine's test asserts all eight equal). Here: nearly all.
    same = sum(a == b for a, b in zip(alone, batched))
    assert same >= len(QUESTIONS) - 2, (same, batched, alone)
    m = server.wait_idle()
    assert m["quantkit_kv_cells_llama"] == m["quantkit_kv_cells_cached"]
