"""A request body's generation parameters → the engine's: sampling (penalties, min-p, logit bias, a grammar for
`response_format`), the seeds of `n` choices, the logprobs asked."""
from __future__ import annotations

import dataclasses
import math

from ..engine import Sampling
from ..engine.reasoning import CLOSE
from ..errors import InvalidArgumentError
from ..runtime.grammar import json_grammar
from .errors import APIError
from .tools import grammar as tool_grammar

BAN = -100  # OpenAI's bias that bans a token


def sampling(body, n_vocab: int) -> Sampling:
    """The request's sampler settings; R1's defaults for what it leaves out."""
    default = Sampling()

    def pick(value, fallback):
        return fallback if value is None else value

    try:
        return Sampling(
            temperature=pick(body.temperature, default.temperature), top_p=pick(body.top_p, default.top_p),
            top_k=pick(body.top_k, default.top_k), seed=body.seed, min_p=pick(body.min_p, 0.0),
            repeat_penalty=pick(body.repeat_penalty, 1.0), frequency_penalty=pick(body.frequency_penalty, 0.0),
            presence_penalty=pick(body.presence_penalty, 0.0), logit_bias=logit_bias(body.logit_bias, n_vocab))
    except InvalidArgumentError as e:
        raise APIError(400, f"{e.param}: {e}" if e.param else str(e), param=e.param) from None


def logit_bias(biases: dict[str, float] | None, n_vocab: int) -> tuple[tuple[int, float], ...]:
    """OpenAI's logit_bias (validated by the schema) for llama.cpp's logit-bias stage: -100 bans the token."""
    out = []
    for key, bias in (biases or {}).items():
        token = int(key)
        if token >= n_vocab:
            raise APIError(400, f"logit_bias: token id {token} is not in the vocabulary (0 to {n_vocab - 1})",
                           param="logit_bias")
        out.append((token, -math.inf if bias <= BAN else float(bias)))
    return tuple(out)


def with_grammar(request, response_format):
    """The engine request with the grammar `response_format` asks for. When the prompt opened a thought, the
    grammar waits for `</think>`: the model thinks freely, then its answer follows the schema."""
    if response_format is None or response_format.type == "text":
        return request
    schema = response_format.json_schema.schema_ if response_format.type == "json_schema" else None
    if response_format.type == "json_schema" and schema is None:
        schema = {}  # no schema given: any JSON object
    try:
        grammar = json_grammar(schema, after=CLOSE if request.opened_thought else None)
    except InvalidArgumentError as e:
        raise APIError(400, f"response_format: {e}", param="response_format") from None
    return dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, grammar=grammar))


def with_tools(request, tools):
    """The engine request with the grammar of the tool calls (serve/tools.py)."""
    try:
        grammar = tool_grammar(tools, after=CLOSE if request.opened_thought else None)
    except InvalidArgumentError as e:
        raise APIError(400, f"tools: {e}", param="tools") from None
    return dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, grammar=grammar))


def choices(request, n: int) -> list:
    """`n` requests for `n` choices of one prompt: the same settings, seeds seed, seed+1, … when a seed is given
    (so that each choice is reproducible), else each its own random seed."""
    seed = request.sampling.seed
    return [dataclasses.replace(request, sampling=dataclasses.replace(
        request.sampling, seed=None if seed is None else seed + i)) for i in range(n)]
