"""The one place that generates: continuous batching of many sequences over one llama.cpp context (chat, serve
and eval all run on it).

    with Engine.open("model.gguf", n_ctx=8192, n_parallel=4) as engine:
        stream = engine.submit(GenerationRequest(tokens, Sampling(temperature=0.6, top_p=0.95, seed=1)))
        for piece in stream:                 # Piece(kind="thought"|"answer", text), as they are made
            ...
        stream.result                        # GenerationResult: texts, token counts, finish reason, timings

    Engine.open(path, speculation=Speculation("draft", draft="small.gguf"))   # or Speculation("ngram")
"""
from ..runtime import Sampling
from .core import Engine, EngineClosedError, EngineStats, QueueFullError
from .request import FINISH_REASONS, GenerationRequest, GenerationResult, Stream, TokenLogprob
from .speculative import Speculation

__all__ = ["FINISH_REASONS", "Engine", "EngineClosedError", "EngineStats", "GenerationRequest", "GenerationResult",
           "QueueFullError", "Sampling", "Speculation", "Stream", "TokenLogprob"]
