"""The OpenAI parameters beyond the basic call, through a live `quantkit serve` and the real `openai` client, on
the scripted R1 model and on SmolLM2: `n` (one prompt evaluation, n choices), `logprobs` / `top_logprobs` equal
to llama.cpp's probabilities computed directly from its logits for the same positions (after top-k, temperature,
min-p and penalties, as the sampler drew), `logit_bias`, the penalties, `seed`, `stop` across streamed chunk
borders, `user` / `metadata` / `store` accepted; `response_format` (json_object, json_schema) holding the answer
after a free thought; what is refused is a 400 naming the parameter."""
from __future__ import annotations

import json
import math

import jsonschema
import numpy as np
import openai
import pytest

from tests._fixtures import scripted as S
from tests._fixtures.llama_reference import reference_llama
from tests._fixtures.serve import start

USER = [{"role": "user", "content": "What is 2+2?"}]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}, "unit": {"enum": ["apples", "pears"]},
                                           "sure": {"type": "boolean"}},
          "required": ["answer", "unit", "sure"], "additionalProperties": False}


@pytest.fixture(scope="module")
def scripted(scripted_gguf):
    with start(scripted_gguf, "--ctx", "4096", "--parallel", "4", "--threads", "1") as s:
        yield s


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    # one thread and small decodes, as in test_serve_smollm2 (the logits of a prompt do not depend on its batch)
    with start(smollm2_gguf, "--ctx", "4096", "--parallel", "4", "--threads", "1", "--batch", "32") as s:
        yield s


@pytest.fixture(scope="module")
def reference(smollm2_gguf):
    llm = reference_llama(smollm2_gguf, n_ctx=512, n_gpu_layers=0, flash_attn=True, logits_all=True, n_threads=1)
    yield llm
    llm.close()


# ---- n -------------------------------------------------------------------------------------------------------

def test_n_choices_evaluate_the_prompt_once(scripted):
    client = scripted.openai()
    before = scripted.wait_idle()["quantkit_prompt_tokens_total"]
    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "n of three, once"}], n=3,
                                       temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert {c.message.content for c in r.choices} == {S.ANSWER}
    assert {c.message.reasoning_content for c in r.choices} == {S.THOUGHT}
    assert r.usage.completion_tokens == 3 * (S.REASONING_TOKENS + S.ANSWER_TOKENS)
    evaluated = r.usage.prompt_tokens - r.usage.prompt_tokens_details.cached_tokens
    # the first choice evaluates the prompt; the others copy its cells and evaluate only its last token
    assert scripted.wait_idle()["quantkit_prompt_tokens_total"] - before == evaluated + 2


def test_n_choices_streamed(scripted):
    stream = scripted.openai().chat.completions.create(model="x", messages=USER, n=2, stream=True,
                                                       stream_options={"include_usage": True})
    content, reasoning, finish = {}, {}, {}
    for chunk in stream:
        for c in chunk.choices:
            content[c.index] = content.get(c.index, "") + (c.delta.content or "")
            reasoning[c.index] = reasoning.get(c.index, "") + (getattr(c.delta, "reasoning_content", None) or "")
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert content == {0: S.ANSWER, 1: S.ANSWER} and reasoning == {0: S.THOUGHT, 1: S.THOUGHT}
    assert finish == {0: "stop", 1: "stop"}
    assert chunk.usage.completion_tokens == 2 * (S.REASONING_TOKENS + S.ANSWER_TOKENS)


def test_n_at_temperature_0_gives_equal_choices_and_seeds_give_reproducible_ones(smollm2):
    client = smollm2.openai()
    ask = dict(model="x", messages=[{"role": "user", "content": "Write a short poem about the sea."}],
               max_tokens=24)
    greedy = client.chat.completions.create(n=3, temperature=0, **ask)
    assert len({c.message.content for c in greedy.choices}) == 1 and len(greedy.choices) == 3
    sampled = client.chat.completions.create(n=3, temperature=0.6, seed=11, **ask)
    texts = [c.message.content for c in sampled.choices]
    assert len(set(texts)) > 1  # three seeds (11, 12, 13) at temperature 0.6
    # choice i is seed + i: the same text as a request of its own with that seed, and again
    for i, text in enumerate(texts):
        alone = client.chat.completions.create(temperature=0.6, seed=11 + i, **ask)
        assert alone.choices[0].message.content == text


# ---- logprobs ------------------------------------------------------------------------------------------------

def _direct(reference, tokens: list[int], n_prompt: int, top_k: int = 0, temperature: float = 0.0,
            min_p: float = 0.0, presence: float = 0.0, frequency: float = 0.0, repeat: float = 1.0) -> list:
    """For each generated token: llama.cpp's logits for its position (llama-cpp-python's `Llama`, all logits),
    through the stages the server's sampler applies, as log-probabilities (nan where a stage cut the token)."""
    reference.reset()
    reference.eval(tokens)
    out = []
    for i in range(n_prompt, len(tokens)):
        logits = np.array(reference.scores[i - 1], dtype=np.float64)
        counts = np.bincount(tokens[max(n_prompt, i - 64):i], minlength=len(logits))
        seen = counts > 0
        logits[seen] = np.where(logits[seen] > 0, logits[seen] / repeat, logits[seen] * repeat)
        logits -= counts * frequency + seen * presence
        if temperature > 0:
            if top_k:
                logits[logits < np.sort(logits)[-top_k]] = -np.inf
            logits /= temperature
            if min_p:
                logits[logits < logits.max() + math.log(min_p)] = -np.inf
        peak = logits.max()
        out.append(logits - (peak + math.log(np.exp(logits - peak).sum())))
    return out


def _check_against(direct, entries):
    """Each token's logprob and its top alternatives equal the direct computation; they sum to at most 1."""
    for lp, entry in zip(direct, entries, strict=True):
        for token_id, logprob in entry:
            assert logprob == pytest.approx(lp[token_id], abs=2e-3)
        assert sum(math.exp(logprob) for _, logprob in entry[1:]) <= 1 + 1e-6


SAMPLERS = {
    "greedy": {"temperature": 0},
    "top-k and temperature": {"temperature": 0.8, "top_k": 20, "top_p": 1.0, "seed": 3},
    "min-p": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.05, "seed": 4},
    "penalties": {"temperature": 0, "presence_penalty": 0.5, "frequency_penalty": 1.0, "repeat_penalty": 1.3},
}


@pytest.mark.parametrize("case", SAMPLERS, ids=list(SAMPLERS))
def test_completion_logprobs_are_llama_cpps_probabilities(smollm2, reference, case):
    settings = SAMPLERS[case]
    prompt = reference.tokenize(b"The three primary colours are", add_bos=True)
    extra = {k: settings[k] for k in ("top_k", "min_p", "repeat_penalty") if k in settings}
    standard = {k: v for k, v in settings.items() if k not in extra}
    r = smollm2.openai().completions.create(model="x", prompt=prompt, max_tokens=12, logprobs=5, extra_body=extra,
                                            **standard)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and lp.text_offset[0] == 0
    generated = [reference.tokenize(t.encode(), add_bos=False, special=True) for t in lp.tokens]
    assert all(len(g) == 1 for g in generated)
    tokens = [*prompt, *(g[0] for g in generated)]
    direct = _direct(reference, tokens, len(prompt), settings.get("top_k", 0), settings["temperature"],
                     settings.get("min_p", 0.0), settings.get("presence_penalty", 0.0),
                     settings.get("frequency_penalty", 0.0), settings.get("repeat_penalty", 1.0))
    entries = [[(tokens[len(prompt) + i], lp.token_logprobs[i]),
                *((reference.tokenize(t.encode(), add_bos=False, special=True)[0], v) for t, v in top.items())]
               for i, top in enumerate(lp.top_logprobs)]
    _check_against(direct, entries)
    # five alternatives, or as many as the stages left (min-p cuts the long tail)
    assert [len(top) for top in lp.top_logprobs] == [min(5, int(np.isfinite(d).sum())) for d in direct]


def test_chat_logprobs_and_top_logprobs(smollm2):
    r = smollm2.openai().chat.completions.create(model="x", messages=USER, temperature=0, max_tokens=8,
                                                 logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token  # greedy took the likeliest
        assert bytes(t.bytes) == t.token.encode()
        assert sum(math.exp(a.logprob) for a in t.top_logprobs) <= 1 + 1e-6
    stream = smollm2.openai().chat.completions.create(model="x", messages=USER, temperature=0, max_tokens=8,
                                                      logprobs=True, top_logprobs=3, stream=True)
    streamed = [t for chunk in stream for c in chunk.choices if c.logprobs for t in c.logprobs.content]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]


def test_the_thought_has_its_own_logprobs(scripted):
    r = scripted.openai().chat.completions.create(model="x", messages=USER, temperature=0, logprobs=True)
    logprobs = r.choices[0].logprobs
    assert "".join(t.token for t in logprobs.content).lstrip("\n") == S.ANSWER
    assert "".join(t["token"] for t in logprobs.model_extra["reasoning_content"]) == S.THOUGHT + S.END_THINK


# ---- logit bias, stop, ignored fields -------------------------------------------------------------------------

def test_logit_bias_bans_and_forces(scripted):
    client = scripted.openai()
    ask = dict(model="x", prompt=S.SHORT_PROMPT, temperature=0, max_tokens=2)
    assert client.completions.create(**ask).choices[0].text == S.SHORT_TEXT
    banned = client.completions.create(logit_bias={str(S.SHORT_IDS[1]): -100}, logprobs=5, **ask).choices[0]
    assert not banned.text.startswith(" world")
    assert " world" not in banned.logprobs.top_logprobs[0]
    forced = client.completions.create(logit_bias={"0": 100}, **ask).choices[0]  # "!" (0) over " world" (40)
    assert forced.text.startswith("!")
    with pytest.raises(openai.BadRequestError, match="logit_bias"):
        client.completions.create(logit_bias={"999999999": 5}, **ask)


def test_stop_strings_across_streamed_chunks(scripted):
    stop = ["never", "nor this", "r is \\bo", "neither"]  # the third spans " answer", " is", " \\", "boxed"
    client = scripted.openai()
    whole = client.chat.completions.create(model="x", messages=USER, temperature=0, stop=stop)
    assert whole.choices[0].message.content == "The answe" and whole.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model="x", messages=USER, temperature=0, stop=stop, stream=True)
    pieces = [c.delta.content for chunk in stream for c in chunk.choices if c.delta.content]
    assert "".join(pieces) == "The answe" and len(pieces) > 1


def test_user_metadata_and_store_are_accepted(scripted):
    r = scripted.openai().chat.completions.create(model="x", messages=USER, temperature=0, user="u-1",
                                                  metadata={"team": "a"}, store=False)
    assert r.choices[0].message.content == S.ANSWER


# ---- structured output ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_json_schema_holds_the_answer_after_a_free_thought(scripted, stream):
    fmt = {"type": "json_schema", "json_schema": {"name": "sum", "schema": SCHEMA, "strict": True}}
    r = scripted.openai().chat.completions.create(model="x", messages=USER, temperature=0, response_format=fmt,
                                                  max_tokens=200, stream=stream)
    if stream:
        chunks = [c for chunk in r for c in chunk.choices]
        content = "".join(c.delta.content or "" for c in chunks)
        thought = "".join(getattr(c.delta, "reasoning_content", None) or "" for c in chunks)
    else:
        content, thought = r.choices[0].message.content, r.choices[0].message.reasoning_content
    assert thought == S.THOUGHT  # the model's own thought, untouched by the grammar
    jsonschema.validate(json.loads(content), SCHEMA)  # the scripted answer ("The answer is …") could not be


def test_json_object_and_schema_on_smollm2(smollm2):
    client = smollm2.openai()
    ask = "Give me a JSON object with the name and age of a person."
    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": ask}], temperature=0,
                                       max_tokens=120, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    fmt = {"type": "json_schema", "json_schema": {"name": "sum", "schema": SCHEMA}}
    r = client.chat.completions.create(model="x", messages=USER, temperature=0, max_tokens=60, response_format=fmt)
    jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)


REFUSED_SCHEMAS = {
    "minimum": {"type": "integer", "minimum": 3},
    "uniqueItems": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    "not": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}},
    "format": {"type": "string", "format": "email"},
}


@pytest.mark.parametrize("keyword", REFUSED_SCHEMAS, ids=list(REFUSED_SCHEMAS))
def test_a_schema_keyword_the_grammar_cannot_hold_is_400_naming_it(scripted, keyword):
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": REFUSED_SCHEMAS[keyword]}}
    with pytest.raises(openai.BadRequestError) as e:
        scripted.openai().chat.completions.create(model="x", messages=USER, response_format=fmt)
    assert e.value.body["param"] == "response_format" and keyword in e.value.body["message"]


REFUSED = {
    "functions": {"functions": [{"name": "f", "parameters": {"type": "object"}}]},
    "tool_choice": {"tool_choice": "required"},  # with no tools to choose from
    "audio": {"audio": {"voice": "alloy", "format": "wav"}},
    "modalities": {"modalities": ["text", "audio"]},
    "prediction": {"prediction": {"type": "content", "content": "x"}},
}


@pytest.mark.parametrize("param", REFUSED, ids=list(REFUSED))
def test_parameters_not_implemented_are_400_naming_them(scripted, param):
    with pytest.raises(openai.BadRequestError) as e:
        scripted.openai().chat.completions.create(model="x", messages=USER, extra_body=REFUSED[param])
    assert e.value.body["param"] == param


@pytest.mark.parametrize("body", [{"echo": True}, {"suffix": "x"}, {"best_of": 3}], ids=["echo", "suffix", "best_of"])
def test_completion_parameters_not_implemented_are_400(scripted, body):
    with pytest.raises(openai.BadRequestError) as e:
        scripted.openai().completions.create(model="x", prompt=S.SHORT_PROMPT, extra_body=body)
    assert e.value.body["param"] == next(iter(body))
