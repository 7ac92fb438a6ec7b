"""The loop guard's false-positive rate, measured on real generations: SmolLM2-135M-Instruct (the embedded model)
asked to reason step by step on arith problems and on open questions, at R1's sampling (temperature 0.6, top-p
0.95, top-k 40), the guard off, up to --max-tokens each.

The guard (engine/thinking.py: a span of 32 tokens occurring 3 times) is run offline over each generation's
tokens. A firing counts as a true loop when the generation, left alone, did not recover: it ran to the token limit
and its last 32 tokens are a span it had already written. A firing on a generation that ended by itself, or that
had moved on, is a false positive. The false-positive rate is false firings over all generations.

    python -m benchmarks.loop_guard --n 120 --max-tokens 768 --out benchmarks/loop_guard_results.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

from quantkit.engine import Engine, Sampling
from quantkit.engine.prompt import chat_prompt, user_message
from quantkit.engine.thinking import LOOP_REPEATS, LOOP_SPAN, find_loop

OPEN_QUESTIONS = [
    "Explain step by step why the sky is blue.", "Describe how a bicycle works, part by part.",
    "Write a short story about a lighthouse keeper.", "List the steps to bake bread and explain each one.",
    "Why do seasons change? Reason it out carefully.", "Compare cats and dogs as pets, point by point.",
    "How does a computer add two numbers? Think it through.", "Plan a three-day trip to Paris, day by day.",
]


def prompts(n: int) -> list[str]:
    from quantkit.eval.tasks import arith_problems

    math = [p.prompt for p in arith_problems(max(n, 1))]
    out = []
    for i in range(n):
        out.append(OPEN_QUESTIONS[(i // 2) % len(OPEN_QUESTIONS)] if i % 4 == 3 else math[i])
    return out


def recovered(tokens: list[int], span: int = LOOP_SPAN) -> bool:
    """The last `span` tokens are not a span written before: the text moved on."""
    tail = tuple(tokens[-span:])
    return not any(tuple(tokens[i:i + span]) == tail for i in range(len(tokens) - 2 * span + 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--max-tokens", type=int, default=768)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from quantkit.convert.embedded import embedded_gguf

    rows = []
    with Engine.open(embedded_gguf(), n_ctx=args.parallel * (args.max_tokens + 256), n_parallel=args.parallel,
                     n_gpu_layers=0, threads=args.threads) as engine:
        asked = prompts(args.n)
        requests = [chat_prompt(engine, [user_message(p)]).request(Sampling(seed=i), args.max_tokens)
                    for i, p in enumerate(asked)]
        streams = engine.submit_many(requests)
        for i, stream in enumerate(streams):
            r = stream.wait()
            tokens = engine.model.tokenize(r.text.encode(), add_special=False).tolist()
            fired = find_loop(tokens)
            true_loop = fired is not None and r.finish_reason == "length" and not recovered(tokens)
            rows.append((i, r.finish_reason, len(tokens), fired, true_loop, r.text))
    fired = [r for r in rows if r[3] is not None]
    false = [r for r in fired if not r[4]]
    lines = [f"# Loop guard on SmolLM2-135M-Instruct ({LOOP_SPAN}-token span, {LOOP_REPEATS} times)", "",
             f"{len(rows)} generations (temperature 0.6, top-p 0.95, top-k 40, up to {args.max_tokens} tokens), "
             f"{sum(r[1] == 'length' for r in rows)} ran to the limit; tokens in all {sum(r[2] for r in rows)}.",
             f"The guard fired on {len(fired)}: {len(fired) - len(false)} true loops, {len(false)} false positives "
             f"(false-positive rate {len(false) / len(rows):.1%} of generations).", "",
             "| # | finish | tokens | fired at | true loop | tail |", "|---|---|---|---|---|---|"]
    for i, finish, n, at, true_loop, text in fired:
        tail = " ".join(text[-80:].split()).replace("|", "/")
        lines.append(f"| {i} | {finish} | {n} | {at} | {'yes' if true_loop else 'no'} | {tail} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
