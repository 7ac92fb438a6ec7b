"""Where eval's answers come from: the engine in this process, or any OpenAI-compatible server. Both return the
engine's GenerationResult, so the runner grades and records them alike."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol as Interface

from ..engine.request import GenerationResult
from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from .runner import Protocol


class Backend(Interface):
    """What the runner needs of a source of answers."""

    name: str  # the model's name in the tables and the samples file
    path: Path | None  # the GGUF, for a local model
    concurrency: int  # requests in flight at once that keep it busy

    async def check(self) -> None:
        """Fail early (before any sample) when the backend cannot answer."""

    async def generate(self, prompt: str, protocol: "Protocol", seed: int | None) -> GenerationResult:
        """One answer to one user message."""

    async def aclose(self) -> None:
        """Free what it holds."""


class EngineBackend:
    """Answers generated in this process, `parallel` sequences at once on the engine."""

    def __init__(self, path: str | Path, *, parallel: int = 4, n_ctx: int = 8192, n_gpu_layers: int | str = "auto",
                 threads: int | None = None, rpc: list[str] | None = None, speculation=None):
        from ..engine import Engine

        self.path = Path(path)
        self.name = self.path.name
        self.engine = Engine.open(self.path, n_ctx=n_ctx, n_parallel=parallel, n_gpu_layers=n_gpu_layers,
                                  threads=threads, rpc=rpc, speculation=speculation)
        try:
            self.engine.template  # a model without a usable template fails here, not at the first problem
        except BaseException:
            self.engine.close()
            raise
        self.concurrency = parallel * 2  # a few waiting in the engine's queue keep every slot busy
        self.thinks = self.engine.template.knows_think  # a reasoning budget means something for it

    async def generate(self, prompt: str, protocol: Protocol, seed: int | None) -> GenerationResult:
        from ..engine.prompt import chat_prompt, user_message
        from ..errors import ContextFullError
        from ..runtime import Sampling

        asked = chat_prompt(self.engine, [user_message(prompt)])  # the task wrote the math instruction already
        if asked.room < 1:
            raise ContextFullError(f"a problem's prompt needs {len(asked.tokens)} tokens, the context holds "
                                   f"{self.engine.n_ctx_seq}", hint="pass a larger --ctx")
        sampling = Sampling(protocol.temperature, protocol.top_p, protocol.top_k, seed)
        request = asked.request(sampling, protocol.max_tokens, fit_context=True, thinking=protocol.thinking)
        stream = self.engine.submit(request, loop=asyncio.get_running_loop())
        async for _ in stream:
            pass
        return stream.result

    async def check(self) -> None:
        """Loading the model was the check."""

    async def aclose(self) -> None:
        self.engine.close()


class EndpointBackend:
    """Answers from an OpenAI-compatible server (quantkit serve, llama-server, vLLM, Ollama …), `concurrency`
    requests at once. The thought is read from `reasoning_content` (llama-server, DeepSeek) or `reasoning` (vLLM,
    Ollama), or split off the content at `</think>` when the server leaves it there."""

    def __init__(self, url: str, model: str, *, api_key: str | None = None, concurrency: int = 4,
                 timeout: float = 3600.0):
        import httpx

        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.name = model
        self.path = None
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)
        self._checked = False

    async def check(self) -> None:
        """The server answers (its model list; quantkit serve and llama-server keep it public)."""
        import httpx

        try:
            response = await self._client.get("/models")
        except httpx.HTTPError as e:
            raise EndpointError(f"cannot reach {self.url}: {type(e).__name__}: {e}".rstrip(": ")) from None
        if response.status_code == 401:
            raise EndpointError(f"{self.url} refused the API key (401)", hint="pass the server's key with --api-key")

    async def generate(self, prompt: str, protocol: Protocol, seed: int | None) -> GenerationResult:
        body = {"model": self.name, "messages": [{"role": "user", "content": prompt}],
                "temperature": protocol.temperature, "top_p": protocol.top_p, "top_k": protocol.top_k,
                "max_tokens": protocol.max_tokens}
        if seed is not None:
            body["seed"] = seed
        if protocol.reasoning_budget is not None:  # quantkit serve's extension (others ignore it)
            body["reasoning_budget"] = protocol.reasoning_budget
        t0 = time.perf_counter()
        data = await self._post("/chat/completions", body)
        seconds = time.perf_counter() - t0
        try:
            choice = data["choices"][0]
            message, usage = choice["message"], data.get("usage") or {}
            content = message.get("content") or ""
            reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.url} answered without choices[0].message") from None
        finish = choice.get("finish_reason") or "stop"
        if not reasoning and "</think>" in content:  # a server that leaves the thought in the content
            from ..engine.reasoning import split_reasoning

            reasoning, content = split_reasoning(content.removeprefix("<think>"), in_thought=True)
        cut_in_thought = bool(reasoning) and not content and finish == "length"
        details = usage.get("completion_tokens_details") or {}
        completion = int(usage.get("completion_tokens") or 0)
        thought_tokens = int(details.get("reasoning_tokens") or 0)
        text = reasoning if cut_in_thought else (f"{reasoning}</think>\n\n{content}" if reasoning else content)
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        accepted = int(details.get("accepted_prediction_tokens") or 0)
        rejected = int(details.get("rejected_prediction_tokens") or 0)
        marks = data.get("quantkit") if isinstance(data.get("quantkit"), dict) else {}  # quantkit serve's field
        return GenerationResult(text=text, reasoning=reasoning, answer=content, prompt_tokens=prompt_tokens,
                                prompt_eval_tokens=prompt_tokens - cached, reasoning_tokens=thought_tokens,
                                drafted_tokens=accepted + rejected, accepted_tokens=accepted,
                                answer_tokens=completion - thought_tokens, finish_reason=finish,
                                thought_unfinished=cut_in_thought, gen_seconds=seconds,
                                forced_tokens=int(marks.get("forced_tokens") or 0),
                                budget_reached=bool(marks.get("budget_reached")), looped=bool(marks.get("looped")))

    async def _post(self, route: str, body: dict) -> dict:
        import httpx

        try:
            response = await self._client.post(route, json=body)
        except httpx.HTTPError as e:
            raise EndpointError(f"cannot reach {self.url}: {type(e).__name__}: {e}".rstrip(": ")) from None
        if response.status_code == 401:
            raise EndpointError(f"{self.url} refused the API key (401)", hint="pass the server's key with --api-key")
        if response.status_code >= 400:
            raise EndpointError(f"{self.url}{route} answered {response.status_code}: {_error_message(response)}")
        try:
            return response.json()
        except ValueError:
            raise EndpointError(f"{self.url}{route} did not answer JSON") from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_message(response) -> str:
    try:
        error = response.json().get("error")
        return str(error.get("message") if isinstance(error, dict) else error)[:300]
    except (ValueError, AttributeError):
        return response.text[:300]


class EndpointError(InvalidArgumentError):
    hint = "check --endpoint (the server's base URL, e.g. http://127.0.0.1:8080/v1), --model and --api-key"
