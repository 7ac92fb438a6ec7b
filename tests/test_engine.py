"""The engine on SmolLM2 through real llama.cpp: many sequences in one context give the same greedy text as one at
a time; prefix reuse, stop strings, budgets, a full context, cancellation, a full KV cache (preemption and
recompute), and the engine's account of its KV cells against llama.cpp's own.

Where batching does change numbers on CPU: llama.cpp's CPU kernels take another path once a decode holds 64 or so
tokens (between 61 and 69 here), so a short prompt decoded beside other prompts gets logits that differ from the
same prompt decoded alone (by up to 0.76 on SmolLM2 Q4_1; `test_where_batched_kernels_differ` measures it).
Generation steps — one token per sequence — are bit-identical however many sequences share them, and so is a
prompt whatever else is in a batch below that size. The equality tests therefore keep every decode under it
(n_batch 32); the scripted model's tests (test_scripted_engine.py) hold at any batch size."""
from __future__ import annotations

import asyncio
import time

import pytest

from quantkit.engine import (Engine, EngineClosedError, GenerationRequest, QueueFullError, Sampling)
from quantkit.errors import ContextFullError

pytestmark = pytest.mark.slow

GREEDY = Sampling(temperature=0)
QUESTIONS = ["What is the capital of France?", "Name a colour.", "Count to five.", "Say hi.", "What is 2+2?",
             "Tell me a joke.", "Why is the sky blue?", "Write a haiku about rain."]


def chat_tokens(model, question: str) -> list[int]:
    return model.prompt_tokens(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n").tolist()


def request(model, question: str, **kwargs) -> GenerationRequest:
    kwargs.setdefault("sampling", GREEDY)
    return GenerationRequest(chat_tokens(model, question), **kwargs)


def open_engine(path, **kwargs) -> Engine:
    kwargs.setdefault("n_ctx", 4096)
    kwargs.setdefault("n_parallel", 4)
    kwargs.setdefault("n_batch", 32)  # every decode on the same side of the CPU kernels' switch (see above)
    return Engine.open(path, n_gpu_layers=0, threads=2, **kwargs)


def assert_no_leaks(engine: Engine) -> None:
    """Idle: no slot busy, and llama.cpp holds exactly the cells the engine's slots say they keep."""
    deadline = time.monotonic() + 5
    while engine.stats().busy_slots and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = engine.stats()
    assert stats.busy_slots == 0 and stats.kv_cells_busy == 0 and stats.waiting == 0
    in_llama = engine.kv_cells_in_llama()
    assert sum(in_llama.values()) == stats.kv_cells_cached, (in_llama, stats)


@pytest.fixture(scope="module")
def one_by_one(smollm2_gguf) -> list[str]:
    with open_engine(smollm2_gguf, n_parallel=8) as engine:
        texts = [engine.submit(request(engine.model, q, max_tokens=24)).wait().text for q in QUESTIONS]
        assert_no_leaks(engine)
    return texts


def test_eight_at_once_give_the_same_greedy_text_as_one_by_one(smollm2_gguf, one_by_one):
    with open_engine(smollm2_gguf, n_parallel=8) as engine:
        # submitted together: how they are batched does not depend on when the engine's thread wakes
        streams = engine.submit_many([request(engine.model, q, max_tokens=24) for q in QUESTIONS])
        pieces = [[p.text for p in s] for s in streams]
        results = [s.result for s in streams]
        assert_no_leaks(engine)
    assert [r.text for r in results] == one_by_one
    for got, r in zip(pieces, results):  # the streamed pieces are the text (ChatML: no thought)
        assert "".join(got) == r.answer == r.text.lstrip("\n") and r.reasoning == ""
        assert r.finish_reason in ("stop", "length") and r.gen_tokens <= 24


def test_more_requests_than_slots_queue_and_all_finish(scripted_gguf):
    """Eight chats over three slots: each waits for a slot, reuses what the slot holds, and gets the whole reply.
    (The scripted model: a slot reused after a shorter prefix fills holes in the cache, so a sequence's cells are
    no longer in position order and its attention sums in another order — enough to flip one of SmolLM2's near
    ties.)"""
    from quantkit.engine.templates import model_template
    from tests._fixtures.scripted import THOUGHT, TEXT, ANSWER

    with open_engine(scripted_gguf, n_parallel=3) as engine:
        template = model_template(engine.model)
        requests = []
        for q in QUESTIONS:
            text, opened = template.prompt([{"role": "user", "content": q}])
            requests.append(GenerationRequest(engine.model.prompt_tokens(text).tolist(), GREEDY, opened_thought=opened))
        results = [s.wait() for s in engine.submit_many(requests)]
        stats = engine.stats()
        assert_no_leaks(engine)
    assert [(r.text, r.reasoning, r.answer) for r in results] == [(TEXT, THOUGHT, ANSWER)] * len(QUESTIONS)
    assert sum(stats.finished.values()) == len(QUESTIONS)
    assert any(r.queue_seconds > 0 and r.prompt_eval_tokens < r.prompt_tokens for r in results)


def test_a_full_kv_cache_preempts_and_recomputes(scripted_gguf):
    """The cells cannot hold every sequence at once: some wait and are recomputed, and every text is whole.
    (The scripted model: a sequence recomputed into other cells may sum its attention in another order, which
    can flip one of SmolLM2's near ties.)"""
    from tests._fixtures.scripted import LOOP_PROMPT, loop_text

    with open_engine(scripted_gguf, n_ctx=128, n_parallel=4) as engine:
        prompt = engine.model.prompt_tokens(LOOP_PROMPT).tolist()
        assert engine.n_ctx == 256  # llama.cpp's rounding: 4 sequences of 104 tokens do not fit
        streams = [engine.submit(GenerationRequest(prompt, GREEDY, max_tokens=100, split_reasoning=False))
                   for _ in range(6)]
        texts = [s.wait().text for s in streams]
        assert engine.stats().preempted > 0
        assert_no_leaks(engine)
    assert texts == [loop_text(100)] * 6


def test_prefix_reuse(smollm2_gguf):
    with open_engine(smollm2_gguf, n_parallel=2) as engine:
        m = engine.model
        first = engine.submit(request(m, "Name a colour.", max_tokens=8)).wait()
        history = chat_tokens(m, "Name a colour.") + m.tokenize(first.text.encode(), False).tolist()
        follow = history + m.prompt_tokens("<|im_end|>\n<|im_start|>user\nAnother one.<|im_end|>\n"
                                           "<|im_start|>assistant\n").tolist()[1 if m.add_bos else 0:]
        second = engine.submit(GenerationRequest(follow, GREEDY, max_tokens=8)).wait()
        assert second.prompt_tokens == len(follow)
        assert second.prompt_eval_tokens < second.prompt_tokens - first.prompt_tokens + 2
        assert_no_leaks(engine)
    with open_engine(smollm2_gguf, n_parallel=1) as fresh:  # the reused cells give the same logits
        again = fresh.submit(GenerationRequest(follow, GREEDY, max_tokens=8)).wait()
    assert again.prompt_eval_tokens == len(follow) and again.text == second.text


def test_stop_strings_end_the_text_and_are_not_part_of_it(smollm2_gguf, one_by_one):
    full = one_by_one[QUESTIONS.index("Count to five.")]
    word = next(w for w in full.split() if len(w) > 3 and full.index(w) > 4)
    with open_engine(smollm2_gguf, n_parallel=1) as engine:
        stream = engine.submit(request(engine.model, "Count to five.", max_tokens=24, stop=("zzz-never", word)))
        streamed = "".join(p.text for p in stream)
        r = stream.result
    assert r.finish_reason == "stop" and r.text == full[: full.index(word)]
    assert streamed == r.answer and word not in streamed


def test_budget_and_context(smollm2_gguf):
    with open_engine(smollm2_gguf, n_ctx=64, n_parallel=1) as engine:
        r = engine.submit(request(engine.model, "Write a long story about a dragon.", max_tokens=5)).wait()
        assert r.finish_reason == "length" and r.gen_tokens == 5
        r = engine.submit(request(engine.model, "Write a long story about a dragon.")).wait()
        if r.finish_reason == "stop":
            pytest.skip("the model ended its answer before the context filled")
        assert r.finish_reason == "context" and r.prompt_tokens + r.gen_tokens == 64
        with pytest.raises(ContextFullError):
            engine.submit(GenerationRequest(list(range(1, 65)), GREEDY))


def test_cancel_frees_the_slot_and_its_cells_within_a_step(smollm2_gguf):
    with open_engine(smollm2_gguf, n_parallel=2) as engine:
        stream = engine.submit(request(engine.model, "Write a long story about a dragon.", max_tokens=200))
        it = iter(stream)
        next(it), next(it)
        stream.cancel()
        r = stream.wait(timeout=5)
        assert r.finish_reason == "cancelled" and 2 <= r.gen_tokens < 200
        assert engine.kv_cells_in_llama() == {0: 0, 1: 0}
        assert_no_leaks(engine)
        # leaving a loop early cancels too
        for _ in engine.submit(request(engine.model, "Write a long story about a dragon.", max_tokens=200)):
            break
        assert_no_leaks(engine)
        assert engine.stats().finished["cancelled"] == 2


def test_seeds(smollm2_gguf):
    with open_engine(smollm2_gguf, n_parallel=3) as engine:
        def sample(seed):
            return request(engine.model, "Tell me a joke.", max_tokens=24, sampling=Sampling(seed=seed))
        a, b, c = (engine.submit(sample(s)) for s in (1, 1, 2))
        texts = [s.wait().text for s in (a, b, c)]
    assert texts[0] == texts[1]  # same seed, same draw, even side by side
    assert texts[0] != texts[2]


def test_asyncio_stream_and_queue_limits(smollm2_gguf):
    with open_engine(smollm2_gguf, n_parallel=1, max_queue=1) as engine:
        async def main():
            loop = asyncio.get_running_loop()
            first = engine.submit(request(engine.model, "Say hi.", max_tokens=16), loop=loop)
            while engine.stats().busy_slots == 0:  # the first has its slot: the queue is empty again
                await asyncio.sleep(0.01)
            second = engine.submit(request(engine.model, "Say hi.", max_tokens=16), loop=loop)
            with pytest.raises(QueueFullError):  # one runs, one waits: the queue holds one
                engine.submit(request(engine.model, "Say hi.", max_tokens=16), loop=loop)
            texts = []
            for stream in (first, second):
                texts.append("".join([p.text async for p in stream]))
            return texts, first.result, second.result

        texts, r1, r2 = asyncio.run(main())
        assert texts[0] == texts[1] == r1.answer and r1.text == r2.text
        assert r2.queue_seconds > 0 and r2.prompt_eval_tokens < r2.prompt_tokens  # waited, then reused the cells
        assert engine.drain(timeout=5)
        with pytest.raises(EngineClosedError):
            engine.submit(request(engine.model, "Say hi."))


def test_where_batched_kernels_differ(smollm2_gguf):
    """The same prompt's last logits, decoded alone and beside another sequence's tokens: equal while the batch
    is small, different (but close) past llama.cpp's CPU kernel switch."""
    import numpy as np

    from quantkit import runtime

    with runtime.load_model(smollm2_gguf, 0) as model, \
            runtime.create_context(model, 1024, 512, n_seq_max=2, threads=2, kv_unified=True) as ctx, \
            runtime.Batch(512) as batch:
        prompt = chat_tokens(model, "Name a colour.")

        def last_logits(n_other: int) -> np.ndarray:
            ctx.clear()
            batch.clear()
            for i, t in enumerate(prompt):
                batch.add(t, i, 0, i == len(prompt) - 1)
            for i in range(n_other):
                batch.add(100 + i, i, 1, False)
            ctx.decode(batch)
            return ctx.output_logits(1)[0].copy()

        alone = last_logits(0)
        small, large = last_logits(32 - len(prompt)), last_logits(128 - len(prompt))
    assert np.array_equal(small, alone)
    diff = float(np.abs(large - alone).max())
    print(f"max |Δ logit| alone vs in a batch of 128: {diff:.4f}")
    assert 0 < diff < 2.0 and large.argmax() == alone.argmax()
