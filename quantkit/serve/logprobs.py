"""Token log-probabilities in OpenAI's two shapes: chat's `logprobs.content` (each token with its bytes and its
top alternatives) and completions' `logprobs` (parallel lists with text offsets).

The numbers are the engine's (runtime.TokenProbs): the distribution the sampler drew from, after logit bias,
penalties, grammar, top-k, temperature, top-p and min-p (greedy: the softmax after bias, penalties and grammar).
The R1 thought's tokens go in `reasoning_content` beside `content` when the thought is split from the answer.
"""
from __future__ import annotations

FLOOR = -9999.0  # OpenAI's stand-in for a log-probability of -inf (JSON has no infinity)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _lp(value: float) -> float:
    return max(value, FLOOR)


def chat_entry(entry) -> dict:
    return {"token": _text(entry.text), "logprob": _lp(entry.logprob), "bytes": list(entry.text),
            "top_logprobs": [{"token": _text(text), "logprob": _lp(lp), "bytes": list(text)}
                             for _, text, lp in entry.top]}


def chat_logprobs(entries, split: bool) -> dict:
    """`choices[i].logprobs` of a chat answer (or of one streamed chunk)."""
    content = [chat_entry(e) for e in entries if not (split and e.thought)]
    out = {"content": content, "refusal": None}
    if split and any(e.thought for e in entries):
        out["reasoning_content"] = [chat_entry(e) for e in entries if e.thought]
    return out


def completion_logprobs(entries, offset: int = 0) -> dict:
    """`choices[i].logprobs` of a completion (or of one streamed chunk whose text starts at `offset`)."""
    tokens, offsets = [], []
    for e in entries:
        offsets.append(offset)
        tokens.append(_text(e.text))
        offset += len(tokens[-1])
    return {"tokens": tokens, "token_logprobs": [_lp(e.logprob) for e in entries],
            "top_logprobs": [{_text(text): _lp(lp) for _, text, lp in e.top} for e in entries],
            "text_offset": offsets}
