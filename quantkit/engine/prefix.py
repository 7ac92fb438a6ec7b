"""Shared prompts: a sequence being admitted takes the cells of its prompt's longest prefix that any slot holds
(its own, or another's through `seq_cp`: in a unified KV cache the cells are shared, not copied), and waits for a
prompt still being evaluated in another slot when that prompt holds much more of its own (the k samples of one
eval problem, the same request twice in a server) rather than evaluating the same tokens beside it.

Pure functions over the engine's slots (`cached`: the tokens whose cells a slot holds; `job`: what it runs)."""
from __future__ import annotations

# A prompt waits for another slot's prompt only when that saves at least this many tokens: a shared chat header
# of a few tokens is not worth a step's delay.
MIN_SHARED = 32


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def best_source(tokens: list[int], slots: list) -> tuple[object | None, int]:
    """The slot whose cells hold the longest prefix of `tokens`, and that prefix's length (0, None: none)."""
    best, best_n = None, 0
    for slot in slots:
        n = common_prefix(slot.cached, tokens)
        if n > best_n:
            best, best_n = slot, n
    return best, best_n


def should_wait(tokens: list[int], slots: list, available: int) -> bool:
    """Whether a prompt should wait a step for a prompt another slot is evaluating: one that will hold at least
    MIN_SHARED more of its tokens (the last token never counts: each sequence evaluates its own) than the
    `available` prefix cells already hold."""
    for slot in slots:
        job = slot.job
        if job is None or job.n_generated > 0 or not job.pending:
            continue
        shared = min(common_prefix(job.tokens, tokens), len(tokens) - 1)
        if shared - available >= MIN_SHARED:
            return True
    return False


def choose_slot(tokens: list[int], free: list):
    """The free slot to run `tokens` in: the one whose cells past the prompt's prefix are the fewest (an empty
    slot, a conversation going on, the same prompt asked again lose nothing or only an old reply), the least
    recently used among equals. The prompt's prefix held anywhere is copied in either way (seq_cp shares cells in
    a unified cache), so a slot is never taken for the chat header it shares while its own prompt, which a later
    request may repeat, is thrown away."""
    def key(slot):
        lost = len(slot.cached) - common_prefix(slot.cached, tokens)
        return -lost, -slot.last_used

    return max(free, key=key)
