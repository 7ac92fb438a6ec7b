"""What logprobs and a grammar cost per generated token: SmolLM2-135M-Instruct (the embedded model) on the
engine, one sequence, greedy, the same prompt; generation tokens/s of plain sampling, of `logprobs` with 5
alternatives (the chain run stage by stage, the distribution normalized in numpy), and of a JSON-object grammar
(llama.cpp's grammar sampler over the whole vocabulary before the draw). Interleaved runs, the best of each,
printed as ratios to plain sampling, with the machine's load.

    python -m benchmarks.sampling_cost --runs 5 --tokens 96
"""
from __future__ import annotations

import argparse
import dataclasses
import os

from quantkit.engine import Engine, Sampling
from quantkit.engine.prompt import chat_prompt
from quantkit.runtime.grammar import json_grammar

PROMPT = "Give me a JSON object with the name, age and city of a person, and a short biography."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    from quantkit.convert.embedded import embedded_gguf

    with Engine.open(embedded_gguf(), n_ctx=2048, n_parallel=1, n_gpu_layers=0, threads=1) as engine:
        prompt = chat_prompt(engine, [{"role": "user", "content": PROMPT}])
        plain = prompt.request(Sampling(temperature=0), args.tokens)
        kinds = {"plain": plain, "logprobs=5": dataclasses.replace(plain, logprobs=5),
                 "json_object grammar": dataclasses.replace(plain, sampling=Sampling(temperature=0,
                                                                                     grammar=json_grammar(None)))}
        best = {k: 0.0 for k in kinds}
        tokens = {}
        for _ in range(args.runs):
            for kind, request in kinds.items():
                result = engine.submit(request).wait()
                best[kind] = max(best[kind], result.gen_tps)
                tokens[kind] = result.gen_tokens
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; best of {args.runs} runs, 1 thread")
    for kind in kinds:
        print(f"{kind:22s} {best[kind]:7.1f} tok/s  ({tokens[kind]} tokens)  {best[kind] / best['plain']:.2f}x")


if __name__ == "__main__":
    main()
