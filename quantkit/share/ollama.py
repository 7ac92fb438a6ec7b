"""`ollama`: an Ollama Modelfile beside a GGUF — R1's chat template in Ollama's (Go) template syntax with
DeepSeek's stop tokens, DeepSeek's sampling (temperature 0.6, top-p 0.95) and a `num_ctx` that the memory
estimate says fits on the given GPU — then `ollama create` when Ollama is installed.

The template follows the model's own Jinja template (the R1-Distill one in the GGUF): no BOS (llama.cpp adds
it), the system prompt first, `<｜User｜>` before each user turn, `<｜Assistant｜>` before each answer and
`<｜end▁of▁sentence｜>` after each earlier one; the generation prompt ends with `<think>` and a newline when the
model's own template does so (newer copies of R1's template), which is what DeepSeek recommends.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgumentError, QuantkitError

log = logging.getLogger(__name__)

STOP_TOKENS = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>")
TEMPERATURE, TOP_P = 0.6, 0.95
DEFAULT_CTX = 8192  # without --vram: quantkit chat's context
MODELFILE = "Modelfile"


class OllamaError(QuantkitError):
    hint = "run `ollama create NAME -f Modelfile` yourself to see Ollama's own message"


def r1_template(think: bool) -> str:
    """R1's chat template in Ollama's template syntax; `think`: the generation prompt opens the thought."""
    opening = "<｜Assistant｜><think>\n" if think else "<｜Assistant｜>"
    return ("{{- if .System }}{{ .System }}{{ end }}\n"
            "{{- range $i, $_ := .Messages }}\n"
            "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
            "{{- if eq .Role \"user\" }}<｜User｜>{{ .Content }}\n"
            "{{- else if eq .Role \"assistant\" }}<｜Assistant｜>{{ .Content }}"
            "{{- if not $last }}<｜end▁of▁sentence｜>{{- end }}\n"
            "{{- end }}\n"
            # `{{ end }}`, not `{{- end }}`, which would trim the newline after <think>
            f"{{{{- if and $last (ne .Role \"assistant\") }}}}{opening}{{{{ end }}}}\n"
            "{{- end }}")


@dataclass
class OllamaModel:
    modelfile: Path
    name: str
    num_ctx: int
    created: bool  # `ollama create` ran and succeeded
    command: list[str]  # the `ollama create` command (run, or to run)


def model_name(path: Path) -> str:
    """An Ollama model name from the file name: `DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf` →
    `deepseek-r1-distill-qwen-7b:q4_k_m`."""
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", path.name.removesuffix(".gguf"))
    base, _, tag = stem.rpartition("-")
    clean = lambda s: re.sub(r"[^a-z0-9._-]+", "-", s.lower()).strip("-")  # noqa: E731
    return f"{clean(base)}:{clean(tag)}" if base and tag else clean(stem)


def fitting_context(path: Path, vram_gib: float | None) -> int:
    """The largest context (a multiple of 1024, at most the training context) whose KV cache and buffers fit
    on a GPU of `vram_gib` with every layer, by estimate-memory's model; 8192 (capped) without `vram_gib`."""
    from ..gguf.reader import file_type_name, read_header
    from ..memory import estimate_memory

    header = read_header(path)
    n_train = int(header.arch("context_length") or DEFAULT_CTX)
    if vram_gib is None:
        return min(DEFAULT_CTX, n_train)
    qtype = file_type_name(header.get("general.file_type"))
    est = estimate_memory(str(path), [qtype] if qtype else None, n_ctx=min(4096, n_train), vram_gib=[vram_gib])
    fit = est.types[0].fit
    ctx = min(fit.max_ctx, n_train) // 1024 * 1024 if fit is not None else 0
    if ctx < 1024:
        raise InvalidArgumentError(f"{path.name} does not fit whole on a {vram_gib:g} GiB GPU even at ctx 1024",
                                   hint="pick a smaller quant type, or a larger --vram")
    return ctx


def modelfile_text(path: Path, num_ctx: int, think: bool) -> str:
    lines = [f"# made by quantkit for {path.name}: R1's template, DeepSeek's stop tokens and sampling",
             f"FROM ./{path.name}", "", f'TEMPLATE """{r1_template(think)}"""', ""]
    lines += [f'PARAMETER stop "{s}"' for s in STOP_TOKENS]
    lines += [f"PARAMETER temperature {TEMPERATURE}", f"PARAMETER top_p {TOP_P}", f"PARAMETER num_ctx {num_ctx}", ""]
    return "\n".join(lines)


def write_modelfile(path: str | Path, *, vram_gib: float | None = None, name: str | None = None,
                    create: bool = True) -> OllamaModel:
    """Write `Modelfile` beside the GGUF `path`, then run `ollama create` when `create` and `ollama` is on PATH.
    A split model is refused: Ollama cannot import shards yet (ollama/ollama#5245)."""
    from ..files import atomic_file
    from ..gguf.reader import read_header

    path = Path(path)
    header = read_header(path)
    if int(header.get("split.count", 0) or 0) > 1:
        raise InvalidArgumentError(f"{path.name} is a shard of a split model, which Ollama cannot import yet "
                                   "(ollama/ollama#5245)", hint="use the single file (convert without "
                                   "--split-max-size), or merge the shards with llama-gguf-split --merge")
    template = str(header.get("tokenizer.chat_template") or "")
    think = "<think>\\n" in template or "<think>\n" in template
    num_ctx = fitting_context(path, vram_gib)
    dest = path.with_name(MODELFILE)
    with atomic_file(dest) as tmp:
        tmp.write_text(modelfile_text(path, num_ctx, think), encoding="utf-8")
    name = name or model_name(path)
    command = ["ollama", "create", name, "-f", MODELFILE]
    created = False
    exe = shutil.which("ollama")
    if create and exe is not None:
        proc = subprocess.run([exe, *command[1:]], cwd=dest.parent, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()
            raise OllamaError(f"ollama create {name} failed: {last[-1] if last else f'exit {proc.returncode}'}")
        created = True
    return OllamaModel(dest, name, num_ctx, created, command)
