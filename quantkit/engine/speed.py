"""Generation speed through the engine on a real prompt, greedy: what `bench` reports as tg with and without
speculative decoding (llama-bench's tg decodes random tokens, which no draft can predict)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ..errors import ChatTemplateError
from ..runtime import Sampling
from .core import Engine
from .request import GenerationRequest

# a math question answered with a thought, as R1 is used
SPEED_PROMPT = "What is the sum of the first 20 positive odd numbers? Please reason step by step."


@dataclass
class GenerationSpeed:
    tokens: int  # generated per run (the first one, which comes with the prompt, not timed)
    samples_tps: list[float] = field(default_factory=list)
    drafted: int = 0
    accepted: int = 0

    @property
    def mean_tps(self) -> float:
        return statistics.fmean(self.samples_tps)

    @property
    def std_tps(self) -> float:
        return statistics.stdev(self.samples_tps) if len(self.samples_tps) > 1 else 0.0


def generation_speed(engine: Engine, n_gen: int, repetitions: int, prompt: str = SPEED_PROMPT) -> GenerationSpeed:
    """`repetitions` greedy generations of at most `n_gen` tokens (one warm-up before), each from a fresh
    sequence (the prompt's cells are reused: only the generation is timed)."""
    try:
        text, _ = engine.template.prompt([{"role": "user", "content": prompt}])
        tokens = engine.model.prompt_tokens(text).tolist()
    except ChatTemplateError:  # a model without a usable template: the question as plain text
        tokens = engine.model.prompt_tokens(prompt).tolist()
    request = GenerationRequest(tokens, Sampling(temperature=0), max_tokens=n_gen, split_reasoning=False)
    engine.submit(request).wait()
    speed = GenerationSpeed(0)
    for _ in range(repetitions):
        r = engine.submit(request).wait()
        speed.tokens = r.gen_tokens
        speed.samples_tps.append(r.gen_tps)
        speed.drafted += r.drafted_tokens
        speed.accepted += r.accepted_tokens
    return speed
