"""Shared prompts on the scripted R1 model (its reply depends on a prompt's last token only, so every prompt
below gets the whole script): the k samples of one prompt evaluate it once and copy its cells (seq_cp), a prompt
sharing a long prefix with a running one evaluates only its own tail, through the engine, eval and serve. The
counts of evaluated prompt tokens are exact."""
from __future__ import annotations

import json

import httpx

from quantkit.engine import Engine, GenerationRequest, Sampling
from quantkit.engine.prefix import MIN_SHARED
from tests._fixtures import scripted as S

GREEDY = Sampling(temperature=0)
PROBLEM = "Compute the sum of the first five hundred odd numbers, then divide it by the number of them. " * 3


def _engine(path, **kwargs) -> Engine:
    kwargs.setdefault("n_parallel", 4)
    return Engine.open(path, n_ctx=2048, n_gpu_layers=0, threads=1, **kwargs)


def _prompt(engine: Engine, question: str) -> tuple[list[int], bool]:
    text, opened = engine.template.prompt([{"role": "user", "content": question}])
    return engine.model.prompt_tokens(text).tolist(), opened


def _idle_cells_match(engine: Engine) -> None:
    cells = engine.kv_cells_in_llama()
    assert all(n == len(s.cached) for s, n in zip(engine._slots, cells.values()))


def test_k_samples_of_one_prompt_evaluate_it_once(scripted_gguf):
    with _engine(scripted_gguf) as engine:
        tokens, opened = _prompt(engine, PROBLEM)
        assert len(tokens) > 2 * MIN_SHARED
        requests = [GenerationRequest(tokens, Sampling(seed=k), opened_thought=opened) for k in range(4)]
        results = [s.wait() for s in engine.submit_many(requests)]
        stats = engine.stats()
        _idle_cells_match(engine)
    assert [r.text for r in results] == [S.TEXT] * 4
    # one sample evaluates the prompt; the others copy all but its last token, which each evaluates itself
    assert sorted(r.prompt_eval_tokens for r in results) == [1, 1, 1, len(tokens)]
    assert stats.prompt_tokens == len(tokens) + 3


def test_a_prompt_takes_the_longest_prefix_a_running_slot_holds(scripted_gguf):
    """A second prompt after the same long preamble arrives while the first generates on its slot: it goes to
    another slot, shares the preamble's cells and evaluates only what follows them."""
    with _engine(scripted_gguf, n_parallel=2) as engine:
        first = engine.model.prompt_tokens(PROBLEM + "Keep going: ping").tolist()
        second = engine.model.prompt_tokens(PROBLEM + "Keep going: pong").tolist()
        shared = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
        running = engine.submit(GenerationRequest(first, GREEDY, max_tokens=300, split_reasoning=False))
        pieces = iter(running)
        next(pieces)  # its prompt is in the cache and it generates
        b = engine.submit(GenerationRequest(second, GREEDY, max_tokens=8, split_reasoning=False)).wait()
        a = running.wait()
        pieces.close()
        stats = engine.stats()
        _idle_cells_match(engine)
    assert a.text == S.loop_text(300) and b.gen_tokens == 8
    assert a.prompt_eval_tokens == len(first) and b.prompt_eval_tokens == len(second) - shared > 0
    assert stats.prompt_tokens == len(first) + len(second) - shared


def test_prompts_asked_again_find_their_cells_after_others_with_the_same_header(scripted_gguf):
    """Four questions, then four others under the same chat header, then the first four again: the others go to
    the empty slots (the header's cells copied), not over the first four's cells, so each question asked again
    evaluates only its last token. (Taking the slot with the longest prefix put the second four on the first
    four's slots for the header's sake, and every repeat evaluated its whole question again.)"""
    questions = [f"Question {i}: how many primes lie below {10 * (i + 3)}? Count them one by one." for i in range(8)]
    with _engine(scripted_gguf, n_parallel=8) as engine:
        prompts = [_prompt(engine, q)[0] for q in questions]
        header = min(next(i for i, (a, b) in enumerate(zip(prompts[0], p)) if a != b) for p in prompts[1:])
        evaluated = []
        for group in (prompts[:4], prompts[4:], prompts[:4]):
            streams = engine.submit_many([GenerationRequest(t, GREEDY, max_tokens=4, split_reasoning=False)
                                          for t in group])
            evaluated.append([s.wait().prompt_eval_tokens for s in streams])
        _idle_cells_match(engine)
    assert header > 0
    assert sum(evaluated[0]) >= sum(len(t) for t in prompts[:4]) - 3 * header  # the header once at most
    assert all(n == len(t) - header for n, t in zip(evaluated[1], prompts[4:]))  # the header copied
    assert evaluated[2] == [1, 1, 1, 1]


def test_choose_slot_keeps_the_cells_worth_keeping():
    from types import SimpleNamespace as Slot

    from quantkit.engine.prefix import choose_slot

    prompt = [1, 2, 3, 4, 5]
    other = Slot(cached=[1, 2, 9, 9, 9, 9], last_used=1.0)  # shares a header, holds another prompt
    empty = Slot(cached=[], last_used=5.0)
    same = Slot(cached=[1, 2, 3, 4, 5, 6, 7], last_used=9.0)  # the same prompt and an old reply
    going_on = Slot(cached=[1, 2, 3], last_used=9.0)  # a conversation this prompt continues
    assert choose_slot(prompt, [other, empty]) is empty
    assert choose_slot(prompt, [other, same]) is same
    assert choose_slot(prompt, [empty, going_on]) is empty  # equal: nothing lost either way, the older one
    older = Slot(cached=[7, 7], last_used=0.5)
    assert choose_slot(prompt, [other, older]) is older  # fewer cells lost


def test_eval_k_samples_evaluate_the_problem_once(tmp_path, scripted_gguf):
    from quantkit.eval.records import read_samples
    from quantkit.eval.runner import Protocol, eval_table, evaluate
    from quantkit.eval.tasks import read_task_file

    path = tmp_path / "task.jsonl"
    path.write_text(json.dumps({"problem": PROBLEM, "answer": "4"}) + "\n")
    result = evaluate([scripted_gguf], read_task_file(path), "mine", Protocol(samples=4, seed=3),
                      out_dir=tmp_path / "eval", parallel=4, n_ctx=2048, n_gpu_layers=0, threads=1)
    (row,) = eval_table(result)
    samples = read_samples(row["samples_file"])
    assert [s.verdict for s in samples] == ["correct"] * 4
    n = samples[0].prompt_tokens
    assert n > 2 * MIN_SHARED and sorted(s.prompt_eval_tokens for s in samples) == [1, 1, 1, n]


def test_serve_requests_with_one_prompt_share_its_cells(scripted_gguf):
    from concurrent.futures import ThreadPoolExecutor

    from tests._fixtures.serve import start

    body = {"model": "x", "messages": [{"role": "user", "content": PROBLEM}], "temperature": 0}
    with start(scripted_gguf, "--ctx", "2048", "--parallel", "3", "--threads", "1") as server:
        def ask(_) -> dict:
            return httpx.post(server.base + "/v1/chat/completions", json=body, timeout=60).json()

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(ask, range(3)))
        metrics = httpx.get(server.base + "/metrics", timeout=10).text
    n = answers[0]["usage"]["prompt_tokens"]
    cached = sorted(a["usage"]["prompt_tokens_details"]["cached_tokens"] for a in answers)
    assert [a["choices"][0]["message"]["content"] for a in answers] == [S.ANSWER] * 3
    assert n > 2 * MIN_SHARED and cached == [0, n - 1, n - 1]
    assert f"prompt_tokens_total {n + 2}" in metrics.replace("quantkit:", "")
