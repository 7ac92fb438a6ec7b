"""Speculative decoding: tokens proposed cheaply, then checked by the model in the step's one batch.

Two proposers, one protocol (`propose`: per sequence, its tokens so far and how many to propose at most):

- `NgramDrafter` (`--spec ngram`): lookup decoding without a second model. The last `ngram` tokens of the sequence
  (prompt and generation) are looked up among its earlier tokens; the tokens that followed their latest earlier
  occurrence are proposed (a repeating span proposes its own continuation). R1's thoughts repeat themselves a lot.
- `DraftModel` (`--draft MODEL.gguf`): a smaller model of the same tokenizer in a context of its own, one sequence
  per slot, which keeps its cells between steps like the target's. Every drafting sequence goes into one draft
  decode per drafted position; a sequence stops drafting when the draft's top probability falls below `p_min`.

The engine (core.py) decodes each sequence's last token followed by its proposed tokens, samples each position in
turn with the sequence's own sampler chain and keeps the proposal while the sampled token equals it: the tokens
are the ones the model would have sampled one by one (the sampler sees the same rows in the same order, its
random draws included), only fewer decodes made them. Rejected cells leave the cache (seq_rm).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import runtime
from ..errors import InvalidArgumentError, VocabularyMismatchError
from ..resources import Closeable
from .prefix import common_prefix

log = logging.getLogger(__name__)

SPEC_MODES = ("ngram", "draft")
VOCAB_SIZE_DIFFERENCE = 128  # llama.cpp's SPEC_VOCAB_MAX_SIZE_DIFFERENCE
VOCAB_CHECK_FROM = 5  # llama.cpp's SPEC_VOCAB_CHECK_START_TOKEN_ID: the first ids (special tokens) may differ


@dataclass(frozen=True)
class Speculation:
    """How tokens are proposed. `draft_max` tokens at most per sequence and step; a proposal shorter than
    `draft_min` is not checked at all; the draft model stops below `p_min` top probability; `ngram` is the
    lookup's n-gram size."""

    mode: str = "ngram"
    draft: Path | None = None  # the draft model's GGUF (mode "draft")
    draft_max: int = 8
    draft_min: int = 0
    p_min: float = 0.75
    ngram: int = 4

    def __post_init__(self) -> None:
        if self.mode not in SPEC_MODES:
            raise InvalidArgumentError(f"--spec must be one of {', '.join(SPEC_MODES)}, not {self.mode!r}",
                                       param="spec")
        if (self.mode == "draft") != (self.draft is not None):
            raise InvalidArgumentError("a draft model goes with speculation by draft, and only with it",
                                       param="draft", hint="pass --draft MODEL.gguf alone, or --spec ngram alone")
        if self.draft_max < 1:
            raise InvalidArgumentError(f"--draft-max must be ≥ 1, not {self.draft_max}", param="draft_max")
        if not 0 <= self.draft_min <= self.draft_max:
            raise InvalidArgumentError(f"--draft-min must be between 0 and --draft-max ({self.draft_max}), not "
                                       f"{self.draft_min}", param="draft_min")
        if not 0 <= self.p_min <= 1:
            raise InvalidArgumentError(f"--draft-p-min must be in [0, 1], not {self.p_min}", param="p_min")
        if self.ngram < 1:
            raise InvalidArgumentError(f"--spec-ngram must be ≥ 1, not {self.ngram}", param="ngram")


def speculation(spec: str | None = None, draft: str | Path | None = None, draft_max: int = 8, draft_min: int = 0,
                p_min: float = 0.75, ngram: int = 4) -> Speculation | None:
    """The commands' flags as one value: None when neither --spec nor --draft asks for speculation."""
    if spec is None and draft is None:
        return None
    mode = spec or "draft"
    return Speculation(mode, Path(draft) if draft is not None else None, draft_max, draft_min, p_min, ngram)


# -- n-gram lookup -----------------------------------------------------------------------------------------------

class NgramIndex:
    """Over one sequence's tokens: each n-gram → where the token after its latest occurrence is. Proposals are
    only as long as the last one proved right, plus one (twice as long after one wholly accepted), and none at
    all after a miss on the first token until the lookup, still made and checked every step, would have got the
    next token right: a lookup that keeps missing costs nothing, where each wrong guess would cost a verified
    row (on a CPU the step's second row costs the most: SmolLM2 F16, 8.3 ms for 1 row, 12.2 for 2, 14.2 for 4)."""

    def __init__(self, tokens: list[int], n: int):
        self.tokens = tokens  # the job's own list, which grows as it generates
        self.n = n
        self._after: dict[tuple[int, ...], int] = {}
        self._indexed = n  # n-grams ending before this index are in the table
        self._last: list[int] = []  # the last lookup, made when the tokens were `_last_at` long
        self._last_at = 0
        self._proposed = False  # whether the last lookup went to the model, or was only checked
        self._length: int | None = None  # how many to propose next (None: as many as asked)
        self._trusted = True  # the last lookup got its first token right (or there was none yet)

    def propose(self, k: int) -> list[int]:
        if self._last:  # how much of the last lookup came true
            got = common_prefix(self._last, self.tokens[self._last_at:])
            self._trusted = got > 0
            if self._proposed and got == len(self._last):
                self._length = min(2 * got, k)
            elif self._proposed or got:
                self._length = got + 1
            self._last = []
        lookup = self._lookup(min(k, self._length or k))
        self._last, self._last_at, self._proposed = lookup, len(self.tokens), self._trusted
        return lookup if self._trusted else []

    def _lookup(self, k: int) -> list[int]:
        tokens, n = self.tokens, self.n
        for end in range(self._indexed, len(tokens)):  # the n-gram tokens[end-n:end] was followed by tokens[end]
            self._after[tuple(tokens[end - n:end])] = end
        self._indexed = max(self._indexed, len(tokens))
        at = self._after.get(tuple(tokens[-n:])) if len(tokens) >= n else None
        if at is None:
            return []
        out: list[int] = []
        for i in range(k):  # past the end, the continuation repeats itself (a cycle shorter than k)
            j = at + i
            out.append(tokens[j] if j < len(tokens) else out[j - len(tokens)])
        return out


class NgramDrafter(Closeable):
    def __init__(self, spec: Speculation):
        self.n = spec.ngram
        self._index: dict[int, NgramIndex] = {}

    def propose(self, wants: list[tuple[int, list[int], int]]) -> dict[int, list[int]]:
        out = {}
        for seq, tokens, k in wants:
            index = self._index.get(seq)
            if index is None or index.tokens is not tokens:  # another job on this sequence
                index = self._index[seq] = NgramIndex(tokens, self.n)
            out[seq] = index.propose(k)
        return out

    def close(self) -> None:
        self._index.clear()


# -- a draft model -----------------------------------------------------------------------------------------------

def check_vocabularies(target: runtime.Model, draft: runtime.Model) -> None:
    """llama.cpp's rule (common_speculative_are_compatible): same vocabulary type, same BOS/EOS use and ids, sizes
    within 128 of each other, the same text for every shared id from 5 on. VocabularyMismatchError names the first
    difference."""
    what = f"the draft {draft.path.name} cannot draft for {target.path.name}"
    hint = "pass a draft with the target's tokenizer (a smaller model of the same family, e.g. a lower quant of it)"
    checks = [("vocabulary type", target.vocab_type, draft.vocab_type),
              ("add-BOS", target.add_bos, draft.add_bos), ("add-EOS", target.add_eos, draft.add_eos)]
    if target.add_bos:
        checks.append(("BOS id", target.bos, draft.bos))
    if target.add_eos:
        checks.append(("EOS id", target.eos, draft.eos))
    for name, a, b in checks:
        if a != b:
            raise VocabularyMismatchError(f"{what}: {name} {b} in the draft, {a} in the target", hint=hint)
    if abs(target.n_vocab - draft.n_vocab) > VOCAB_SIZE_DIFFERENCE:
        raise VocabularyMismatchError(f"{what}: {draft.n_vocab} tokens against {target.n_vocab} (more than "
                                      f"{VOCAB_SIZE_DIFFERENCE} apart)", hint=hint)
    for i in range(VOCAB_CHECK_FROM, min(target.n_vocab, draft.n_vocab)):
        a, b = target.token_text(i), draft.token_text(i)
        if a != b:
            raise VocabularyMismatchError(f"{what}: token {i} is {b!r} in the draft, {a!r} in the target", hint=hint)


class DraftModel(Closeable):
    """A draft model's context, one sequence per slot (the same ids as the target's), greedy proposals."""

    def __init__(self, model: runtime.Model, spec: Speculation, *, target_vocab: int, n_ctx: int, n_seq: int,
                 n_batch: int = 512, threads: int | None = None):
        self.model = model
        self.target_vocab = target_vocab  # a larger draft vocabulary's extra ids are never proposed
        self.p_min = spec.p_min
        self.context = runtime.create_context(model, n_ctx=n_ctx, n_batch=n_batch, n_seq_max=n_seq, threads=threads,
                                              kv_unified=True)
        self.batch = runtime.Batch(self.context.n_batch)
        self.cached: dict[int, list[int]] = {}  # per sequence, the tokens whose cells the draft context holds

    def propose(self, wants: list[tuple[int, list[int], int]]) -> dict[int, list[int]]:
        try:
            rows = self._catch_up(wants)
            return self._draft(wants, rows)
        except runtime.KVCacheFullError:  # the draft's cells ran out: start it over, propose nothing this step
            log.info("the draft's KV cache is full: its sequences start over")
            self.context.clear()
            self.cached.clear()
            return {}

    def _catch_up(self, wants) -> dict[int, int]:
        """Decode what each sequence's draft cells lack (a prompt, the tokens accepted since): all but the last
        tokens in chunks, then every sequence's last token in one decode; the batch row of each one's last."""
        batch = self.batch
        batch.clear()
        for seq, tokens, _ in wants:
            cached = self.cached.get(seq, [])
            keep = min(common_prefix(cached, tokens), len(tokens) - 1)
            self.context.seq_rm(seq, keep, -1)
            self.cached[seq] = cached = cached[:keep]
            for i in range(keep, len(tokens) - 1):
                if batch.n_tokens == batch.capacity:
                    self.context.decode(batch)
                    batch.clear()
                batch.add(tokens[i], i, seq, False)
                cached.append(tokens[i])
        if batch.n_tokens:
            self.context.decode(batch)
        batch.clear()
        rows = {}
        for seq, tokens, _ in wants:
            rows[seq] = batch.add(tokens[-1], len(tokens) - 1, seq, True)
            self.cached[seq].append(tokens[-1])
        self.context.decode(batch)
        return rows

    def _draft(self, wants, rows: dict[int, int]) -> dict[int, list[int]]:
        """Greedy tokens, one decode per drafted position for every sequence still drafting."""
        limit = {seq: k for seq, _, k in wants}
        drafts: dict[int, list[int]] = {seq: [] for seq in limit}
        active = list(limit)
        while active:
            picks = [(seq, *self._top(rows[seq])) for seq in active]  # read before the next decode
            self.batch.clear()
            active = []
            for seq, token, p in picks:
                if p < self.p_min or token >= self.target_vocab or self.model.is_end_of_generation(token):
                    continue
                drafts[seq].append(token)
                if len(drafts[seq]) < limit[seq]:
                    cached = self.cached[seq]
                    rows[seq] = self.batch.add(token, len(cached), seq, True)
                    cached.append(token)
                    active.append(seq)
            if active:
                self.context.decode(self.batch)
        return drafts

    def _top(self, row: int) -> tuple[int, float]:
        """The draft's most likely token at batch row `row`, and its probability (1.0 when p_min is 0)."""
        logits = self.context.logits_row(row)
        token = int(np.argmax(logits))
        if self.p_min <= 0:
            return token, 1.0
        top = float(logits[token])
        return token, 1.0 / float(np.sum(np.exp(logits - top)))

    def close(self) -> None:
        self.batch.close()
        self.context.close()

