"""`/metrics` in Prometheus' text format: the server's request counts and the engine's own numbers."""
from __future__ import annotations

import os
import threading
from collections import Counter

Family = tuple  # (name, kind, help, [(labels, value)]): one metric and its samples

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models", "/health", "/metrics")


class Metrics:
    """Counts answered requests by endpoint and status (unknown paths under "other"); renders everything."""

    def __init__(self):
        self._requests: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    def observe(self, path: str, status: int) -> None:
        with self._lock:
            self._requests[(path if path in ENDPOINTS else "other", status)] += 1

    def render(self, stats=None, kv_cells_llama: int | None = None, replica: str | None = None) -> str:
        """The exposition text; `stats` is the engine's EngineStats (None while the model loads),
        `kv_cells_llama` the cells llama.cpp itself holds (only known while the engine is idle), `replica` the
        name of this replica when there are several (each counts only what it answered)."""
        return render_families(self.families(stats, kv_cells_llama, replica))

    def families(self, stats=None, kv_cells_llama: int | None = None, replica: str | None = None) -> list[Family]:
        """What `render` writes, as data: (name, kind, help, [(labels, value)]) per metric, labels as `{…}` or ""."""
        out: list[Family] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.append((name, kind, help_, samples))

        with self._lock:
            requests = sorted(self._requests.items())
        if replica:
            metric("replica_info", "gauge", "The replica that answered (its counts are its own).",
                   [(f'{{replica="{replica}",pid="{os.getpid()}"}}', 1)])
        metric("requests_total", "counter", "HTTP requests answered, by endpoint and status code.",
               [(f'{{endpoint="{e}",status="{s}"}}', n) for (e, s), n in requests])
        metric("model_loaded", "gauge", "1 once the model is loaded and the engine runs.", [("", stats is not None)])
        if stats is None:
            return out
        metric("prompt_tokens_total", "counter", "Prompt tokens evaluated (a prefix still cached is not).",
               [("", stats.prompt_tokens)])
        metric("generated_tokens_total", "counter", "Tokens generated.", [("", stats.generated_tokens)])
        metric("drafted_tokens_total", "counter", "Tokens proposed by speculative decoding (--draft, --spec ngram).",
               [("", stats.drafted_tokens)])
        metric("accepted_tokens_total", "counter", "Proposed tokens the model's own sampling accepted.",
               [("", stats.accepted_tokens)])
        metric("generations_total", "counter", "Generations ended, by finish reason (failed: the engine failed).",
               [(f'{{reason="{r}"}}', n) for r, n in sorted(stats.finished.items())]
               + [('{reason="failed"}', stats.failed)])
        metric("requests_waiting", "gauge", "Requests queued for a slot.", [("", stats.waiting)])
        metric("slots_busy", "gauge", "Slots generating.", [("", stats.busy_slots)])
        metric("slots_total", "gauge", "Slots (--parallel).", [("", stats.n_parallel)])
        metric("kv_cells_used", "gauge", "KV cells held by running sequences.", [("", stats.kv_cells_busy)])
        metric("kv_cells_cached", "gauge", "KV cells idle slots keep for prefix reuse.", [("", stats.kv_cells_cached)])
        metric("kv_cells_total", "gauge", "KV cells of the shared cache (--ctx).", [("", stats.n_ctx)])
        if kv_cells_llama is not None:
            metric("kv_cells_llama", "gauge", "KV cells llama.cpp itself holds (reported while idle).",
                   [("", kv_cells_llama)])
        tps = stats.generated_tokens / stats.gen_seconds if stats.gen_seconds > 0 else 0.0
        metric("generation_tokens_per_second", "gauge", "Tokens generated per second of generating steps.",
               [("", round(tps, 3))])
        return out


def render_families(families: list[Family]) -> str:
    out: list[str] = []
    for name, kind, help_, samples in families:
        out.append(f"# HELP quantkit_{name} {help_}")
        out.append(f"# TYPE quantkit_{name} {kind}")
        out.extend(f"quantkit_{name}{labels} {_number(value)}" for labels, value in samples)
    return "\n".join(out) + "\n"


def _number(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
