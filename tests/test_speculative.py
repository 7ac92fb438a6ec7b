"""Speculative decoding through real llama.cpp: the tokens with a draft model or the n-gram lookup are the tokens
without, greedy and with a fixed seed at R1's temperature, on the scripted model (exact at any batch size) and on
SmolLM2 with its own file as the draft (decodes kept under llama.cpp's CPU kernel switch, as in test_engine.py:
verification rows then get bit-identical logits); rejected cells leave the cache; the draft's vocabulary is
checked as llama.cpp checks it."""
from __future__ import annotations

import numpy as np
import pytest

from quantkit.engine import Engine, GenerationRequest, Sampling
from quantkit.engine.speculative import NgramIndex, Speculation, speculation
from quantkit.errors import InvalidArgumentError, VocabularyMismatchError
from tests._fixtures import scripted as S

GREEDY, R1 = Sampling(temperature=0), Sampling(seed=1234)
QUESTIONS = ["Write a short poem about the sea with a chorus repeated twice.", "Count from one to twenty.",
             "List the days of the week, twice.", "What is 2+2? Explain step by step."]


def _open(path, spec, n_ctx: int = 4096, **kwargs) -> Engine:
    kwargs.setdefault("n_parallel", 4)
    kwargs.setdefault("n_batch", 32)
    return Engine.open(path, n_ctx=n_ctx, n_gpu_layers=0, threads=2, speculation=spec, **kwargs)


def _cells_match(engine: Engine) -> None:
    """llama.cpp holds exactly the cells the engine's slots account for: no rejected proposal left behind."""
    cells = engine.kv_cells_in_llama()
    assert [len(s.cached) for s in engine._slots] == list(cells.values())


def test_ngram_index_proposes_the_continuation_of_the_last_ngram():
    tokens = [1, 2, 3, 4, 9, 1, 2, 3]
    assert NgramIndex(tokens, 3).propose(4) == [4, 9, 1, 2]
    assert NgramIndex([5, 6, 5, 6], 2).propose(5) == [5, 6, 5, 6, 5]  # a cycle proposes itself past the end
    assert NgramIndex([1, 2, 3], 2).propose(4) == []  # never seen before


def test_ngram_lookup_stops_proposing_after_a_miss_until_it_would_have_been_right():
    tokens = [1, 2, 3, 4, 1, 2, 3]
    index = NgramIndex(tokens, 3)
    assert index.propose(2) == [4, 1]
    tokens.append(7)  # the model sampled something else: the first proposed token missed
    assert index.propose(2) == []  # [1, 2, 3, 7] is new: nothing to look up anyway
    tokens += [1, 2, 3]  # decoded one by one, nothing proposed
    assert index.propose(2) == []  # a lookup exists ([7, 1] after the latest "1 2 3"), but the last one missed
    tokens.append(7)  # ... and it would have been right
    assert index.propose(2) == [1, 2]  # trusted again


def test_flags_refuse_what_cannot_work():
    assert speculation() is None
    assert speculation("ngram", draft_max=4) == Speculation("ngram", draft_max=4)
    for kwargs in ({"spec": "eagle"}, {"spec": "ngram", "draft": "d.gguf"}, {"spec": "draft"},
                   {"spec": "ngram", "draft_max": 0}, {"spec": "ngram", "draft_min": 9},
                   {"spec": "ngram", "p_min": 1.5}):
        with pytest.raises(InvalidArgumentError):
            speculation(**kwargs)


@pytest.mark.parametrize("sampling", [GREEDY, R1], ids=["greedy", "r1"])
def test_scripted_loop_with_ngram_and_with_a_draft(scripted_gguf, sampling):
    spec_of = {"ngram": Speculation("ngram"), "draft": Speculation("draft", draft=scripted_gguf)}
    for name, spec in spec_of.items():
        with _open(scripted_gguf, spec, n_batch=512) as engine:
            prompt = engine.model.prompt_tokens(S.LOOP_PROMPT).tolist()
            requests = [GenerationRequest(prompt, sampling, max_tokens=100, split_reasoning=False)] * 3
            results = [s.wait() for s in engine.submit_many(requests)]
            stats = engine.stats()
            _cells_match(engine)
        assert [r.text for r in results] == [S.loop_text(100)] * 3, name
        # the script is certain: every proposal the lookup or the draft makes is right
        assert all(r.accepted_tokens == r.drafted_tokens > 50 for r in results), name
        assert stats.accepted_tokens == stats.drafted_tokens == sum(r.drafted_tokens for r in results)


def test_scripted_chat_reply_with_a_draft(scripted_gguf):
    with _open(scripted_gguf, Speculation("draft", draft=scripted_gguf, draft_max=3)) as engine:
        text, opened = engine.template.prompt([{"role": "user", "content": "What is 2+2?"}])
        r = engine.submit(GenerationRequest(engine.model.prompt_tokens(text).tolist(), GREEDY,
                                            opened_thought=opened)).wait()
        _cells_match(engine)
    assert (r.reasoning, r.answer, r.reasoning_tokens, r.answer_tokens) == (S.THOUGHT, S.ANSWER, S.REASONING_TOKENS,
                                                                             S.ANSWER_TOKENS)
    assert r.drafted_tokens > 0 and r.accepted_tokens == r.drafted_tokens  # the draft stops at EOS: no rejection


def _generate(path, spec, sampling, n_parallel: int) -> tuple[list, object]:
    with _open(path, spec, n_parallel=n_parallel) as engine:
        m = engine.model
        tokens = [m.prompt_tokens(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n").tolist()
                  for q in QUESTIONS]
        requests = [GenerationRequest(t, Sampling(sampling.temperature, seed=sampling.seed and sampling.seed + i),
                                      max_tokens=48) for i, t in enumerate(tokens)]
        results = [s.wait() for s in engine.submit_many(requests)]
        stats = engine.stats()
        _cells_match(engine)
    return results, stats


SPECS = {"ngram": lambda path: Speculation("ngram", ngram=2),
         "draft": lambda path: Speculation("draft", draft=path, p_min=0.0)}


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [GREEDY, R1], ids=["greedy", "r1-seeded"])
@pytest.mark.parametrize("mode", SPECS)
def test_smollm2_one_sequence_gives_the_same_tokens(smollm2_gguf, mode, sampling):
    """One sequence at a time: a verification batch (the last token and the proposals) gives the logits that
    decoding them one by one gives, bit for bit, so the tokens are the same, greedy or seeded."""
    plain, _ = _generate(smollm2_gguf, None, sampling, n_parallel=1)
    results, stats = _generate(smollm2_gguf, SPECS[mode](smollm2_gguf), sampling, n_parallel=1)
    assert [r.text for r in results] == [r.text for r in plain]
    assert stats.drafted_tokens > 0 and stats.accepted_tokens > 0
    if mode == "ngram":
        assert stats.accepted_tokens < stats.drafted_tokens  # some proposals were rejected (and their cells)


@pytest.mark.slow
def test_smollm2_many_sequences_differ_only_at_near_ties(smollm2_gguf):
    """Several sequences: rejected proposals leave holes in the unified cache that the next step's tokens of
    other sequences fill, so a sequence's cells are no longer in position order and attention sums them in
    another order (test_engine.py's slot reuse does the same). The logits move by rounding only: a text that
    differs from the plain one first differs where the plain run's two best tokens were nearly tied."""
    plain, _ = _generate(smollm2_gguf, None, GREEDY, n_parallel=4)
    results, _ = _generate(smollm2_gguf, SPECS["ngram"](smollm2_gguf), GREEDY, n_parallel=4)
    same = sum(r.text == p.text for r, p in zip(results, plain))
    gaps = [_gap_at_first_difference(smollm2_gguf, q, p.text, r.text)
            for q, p, r in zip(QUESTIONS, plain, results) if r.text != p.text]
    print(f"{same}/{len(plain)} texts equal; top-2 logit gaps where the others first differ: {gaps}")
    assert all(g < 0.25 for g in gaps)


def _gap_at_first_difference(path, question: str, a: str, b: str) -> float:
    """The gap between the two best logits, on a fresh context, at the first token where texts a and b differ."""
    from quantkit import runtime

    with runtime.load_model(path, 0) as model, runtime.create_context(model, 1024, 512, threads=2) as ctx, \
            runtime.Batch(512) as batch:
        prompt = model.prompt_tokens(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n").tolist()
        ta, tb = (model.tokenize(t.encode(), False).tolist() for t in (a, b))
        n = next(i for i, (x, y) in enumerate(zip(ta, tb)) if x != y)
        tokens = prompt + ta[:n]
        for i, t in enumerate(tokens):
            batch.add(t, i, 0, i == len(tokens) - 1)
        ctx.decode(batch)
        logits = np.sort(ctx.output_logits(1)[0])
        return float(logits[-1] - logits[-2])


def _tiny_llama(tmp_path, name: str, seed: int, rename: int | None = None):
    """A tiny random llama on a cut-down llama-bpe vocabulary; `rename`: that token's text changed."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    from tests._fixtures.tiny_gguf_models import reduced_vocab_gguf, write_tiny_model

    vocab = reduced_vocab_gguf("llama-bpe")
    if rename is not None:
        reader = GGUFReader(vocab)
        w = GGUFWriter(tmp_path / f"{name}-vocab.gguf", "llama")
        for key, f in reader.fields.items():
            if not key.startswith("tokenizer."):
                continue
            value = f.contents()
            if key == "tokenizer.ggml.tokens":
                value = [*value[:rename], value[rename] + "zz", *value[rename + 1:]]
            vtype = f.types[0]
            w.add_key_value(key, value, vtype, sub_type=f.types[-1] if vtype == GGUFValueType.ARRAY else None)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        vocab = tmp_path / f"{name}-vocab.gguf"
    path = tmp_path / f"{name}.gguf"
    write_tiny_model(path, "llama", vocab, seed=seed)
    return path


def test_tiny_random_draft_rejects_often_and_changes_nothing(tmp_path):
    target, draft = _tiny_llama(tmp_path, "target", 0), _tiny_llama(tmp_path, "draft", 1)

    def texts(spec):
        with _open(target, spec, n_parallel=2) as engine:
            prompt = engine.model.tokenize(b"Once upon a time there was").tolist()
            results = [s.wait() for s in engine.submit_many([GenerationRequest(prompt, GREEDY, max_tokens=40,
                                                                               split_reasoning=False)] * 2)]
            _cells_match(engine)
            return [r.text for r in results], engine.stats()

    plain, _ = texts(None)
    drafted, stats = texts(Speculation("draft", draft=draft, p_min=0.0))
    assert drafted == plain and stats.drafted_tokens > stats.accepted_tokens


def test_tiny_random_draft_at_r1_temperature_gives_each_seed_its_tokens(tmp_path):
    """Sampled (temperature 0.6, a seed per request) with a draft that is mostly wrong: every seed's tokens are
    the ones it gets without the draft — the sampler draws the same random numbers for the same rows — so the
    distribution over seeds is the model's own."""
    target, draft = _tiny_llama(tmp_path, "target", 0), _tiny_llama(tmp_path, "draft", 1)

    def texts(spec):
        with _open(target, spec, n_parallel=1) as engine:
            prompt = engine.model.tokenize(b"The weather today is").tolist()
            return [engine.submit(GenerationRequest(prompt, Sampling(seed=seed), max_tokens=24,
                                                    split_reasoning=False)).wait() for seed in range(8)]

    plain, drafted = texts(None), texts(Speculation("draft", draft=draft, p_min=0.0))
    assert [r.text for r in drafted] == [r.text for r in plain]
    assert len({r.text for r in plain}) > 1  # the seeds do sample different texts
    assert sum(r.drafted_tokens - r.accepted_tokens for r in drafted) > 0


def test_a_draft_of_another_vocabulary_is_one_clear_error(tmp_path, smollm2_gguf, scripted_gguf):
    with pytest.raises(VocabularyMismatchError, match="add-BOS False in the draft") as e:
        _open(scripted_gguf, Speculation("draft", draft=smollm2_gguf))
    assert len(str(e.value).splitlines()) == 1
    target, other = _tiny_llama(tmp_path, "target", 0), _tiny_llama(tmp_path, "renamed", 0, rename=1000)
    with pytest.raises(VocabularyMismatchError, match="token 1000 is .*zz.* in the draft"):
        _open(target, Speculation("draft", draft=other))


def test_the_numbers_in_chat_json_serve_usage_and_metrics(scripted_gguf):
    import json

    import httpx
    from typer.testing import CliRunner

    from quantkit.cli.app import app
    from tests._fixtures.serve import start

    result = CliRunner().invoke(app, ["chat", str(scripted_gguf), "-p", "What is 2+2?", "--json", "--draft",
                                      str(scripted_gguf), "--draft-max", "4", "--threads", "1", "-ngl", "0",
                                      "--ctx", "512"])
    assert result.exit_code == 0, result.output
    turn = json.loads(result.stdout)
    assert turn["answer"] == S.ANSWER and turn["accepted_tokens"] == turn["drafted_tokens"] > 0

    with start(scripted_gguf, "--ctx", "1024", "--parallel", "2", "--threads", "1", "--spec", "ngram") as server:
        body = {"prompt": S.LOOP_PROMPT, "max_tokens": 60, "temperature": 0}
        r = httpx.post(server.base + "/v1/completions", json=body, timeout=60).json()
        metrics = httpx.get(server.base + "/metrics", timeout=10).text
    details = r["usage"]["completion_tokens_details"]
    assert r["choices"][0]["text"] == S.loop_text(60)
    assert details["accepted_prediction_tokens"] > 40 and details["rejected_prediction_tokens"] == 0
    assert f"quantkit_drafted_tokens_total {details['accepted_prediction_tokens']}" in metrics
    assert f"quantkit_accepted_tokens_total {details['accepted_prediction_tokens']}" in metrics


def test_eval_records_and_table_carry_the_acceptance(tmp_path, scripted_gguf):
    import json

    from quantkit.eval.records import read_samples
    from quantkit.eval.runner import Protocol, eval_table, evaluate
    from quantkit.eval.tasks import read_task_file

    path = tmp_path / "task.jsonl"
    path.write_text(json.dumps({"problem": "What is 2+2?", "answer": "4"}) + "\n")
    result = evaluate([scripted_gguf], read_task_file(path), "mine", Protocol(samples=2), out_dir=tmp_path / "eval",
                      parallel=2, n_ctx=1024, n_gpu_layers=0, threads=1,
                      speculation=Speculation("draft", draft=scripted_gguf))
    (row,) = eval_table(result)
    samples = read_samples(row["samples_file"])
    assert [s.verdict for s in samples] == ["correct"] * 2
    assert all(s.accepted_tokens == s.drafted_tokens > 0 for s in samples) and row["acceptance"] == 1.0


def test_a_full_kv_cache_drops_the_proposals_first(scripted_gguf):
    """Six loops in cells for two and a half: proposals that do not fit are dropped, then sequences wait and are
    recomputed; every text is whole and llama.cpp holds what the engine accounts for."""
    with _open(scripted_gguf, Speculation("ngram"), n_ctx=128, n_parallel=4, n_batch=512) as engine:
        engine_ctx, preempted = engine.n_ctx, None
        prompt = engine.model.prompt_tokens(S.LOOP_PROMPT).tolist()
        streams = engine.submit_many([GenerationRequest(prompt, GREEDY, max_tokens=100, split_reasoning=False)] * 6)
        texts = [s.wait().text for s in streams]
        preempted = engine.stats().preempted
        _cells_match(engine)
    assert engine_ctx == 256 and preempted > 0 and texts == [S.loop_text(100)] * 6
