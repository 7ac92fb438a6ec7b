"""Options shared by several commands, declared once so that each flag has one spelling and one help text."""
from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

Json = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
Threads = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: all physical cores).")]
NGpuLayers = Annotated[
    str, typer.Option("--n-gpu-layers", "-ngl", help="Layers to offload to the GPU: a number, 'all', or 'auto'.")
]
Ctx = Annotated[Optional[int], typer.Option("--ctx", "-c", min=1, help="Context size in tokens.")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
Force = Annotated[bool, typer.Option("--force", help="Redo outputs that already exist.")]
GGUFPath = Annotated[Path, typer.Argument(help="A .gguf file.", show_default=False)]
Rpc = Annotated[Optional[str], typer.Option(
    "--rpc", help="Offload layers to ggml-rpc-server hosts too: HOST:PORT[,HOST:PORT…] (an RPC-capable build).")]
SplitMaxSize = Annotated[Optional[str], typer.Option(
    "--split-max-size", help="Split each file into llama.cpp shards (Name-00001-of-0000N.gguf) of at most this much "
                             "tensor data: 48G, 500M (powers of 1000), 4GiB (powers of 1024) or bytes.")]
SplitMaxTensors = Annotated[Optional[int], typer.Option(
    "--split-max-tensors", min=1, help="Split each file into llama.cpp shards of at most this many tensors.")]
ImatrixFile = Annotated[Optional[Path], typer.Option(
    "--imatrix", help="Importance matrix (GGUF from llama-imatrix or quantkit imatrix; opens the IQ types), or "
                      "'auto' / 'auto:python-docs': computed once from the base and cached beside it.")]
TargetSize = Annotated[Optional[List[str]], typer.Option(
    "--target-size", help="Make a per-tensor mix that fits this file size: 4.2G, 4200MB (powers of 1000), 3.9GiB (powers of 1024) or bytes; repeatable.")]
TargetBpw = Annotated[Optional[List[float]], typer.Option(
    "--target-bpw", help="Make a per-tensor mix of at most this many bits per weight; repeatable.")]
Calibrate = Annotated[Optional[str], typer.Option(
    "--calibrate", metavar="DATASET",
    help="Plan budget mixes on errors calibrated against the KLD each tensor alone causes, measured on DATASET's "
         "calibration text (python-docs, wikitext-2): a forward pass per tensor, once per base, then cached.")]


class LoopGuardMode(str, enum.Enum):
    end = "end"
    stop = "stop"
    off = "off"


ReasoningBudget = Annotated[Optional[int], typer.Option(
    "--reasoning-budget", help="Most thought tokens: then the closing message and </think> are forced and the answer "
                               "follows (0: an empty thought, the answer at once; default: no limit).")]
ReasoningBudgetMessage = Annotated[str, typer.Option(
    "--reasoning-budget-message", help="The sentence forced before </think> when the budget or the loop guard "
                                       "ends a thought.")]
LoopGuard = Annotated[LoopGuardMode, typer.Option(
    "--loop-guard", help="A thought that repeats itself (a 32-token span 3 times): end it like a budget, stop the "
                         "generation, or leave it (off).")]


class SpecMode(str, enum.Enum):
    ngram = "ngram"


Spec = Annotated[Optional[SpecMode], typer.Option(
    "--spec", help="Speculative decoding without a draft model: 'ngram' proposes what followed the last n-gram "
                   "earlier in the sequence (lookup decoding); the output is unchanged.")]
Draft = Annotated[Optional[Path], typer.Option(
    "--draft", "-md", help="Speculative decoding with this draft model (.gguf, the target's tokenizer): it proposes, "
                           "the model checks in one batch; the output is unchanged.")]
DraftMax = Annotated[int, typer.Option("--draft-max", min=1, help="Most tokens proposed per sequence and step.")]
DraftMin = Annotated[int, typer.Option("--draft-min", min=0, help="A proposal shorter than this is not checked.")]
DraftPMin = Annotated[float, typer.Option(
    "--draft-p-min", min=0.0, max=1.0, help="The draft stops proposing below this top probability.")]
SpecNgram = Annotated[int, typer.Option("--spec-ngram", min=1, help="With --spec ngram: the n-gram's length.")]
