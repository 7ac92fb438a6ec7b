"""Recipes: one small TOML file per model saying what `quantkit run` makes and measures. Data only.

    description = "DeepSeek-R1-Distill-Qwen-7B"
    source = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"   # a Hub repo id, a checkpoint folder, or "embedded:smollm2"
    revision = "main"
    outtype = "BF16"                                     # the base file every rung is quantized from
    ladder = ["Q4_K_M", "Q8_0"]                          # names as `quantkit convert -t` takes them ("all": the ladder)
    targets = ["4.2G", "bpw<=3.5"]                       # budget mixes beside the ladder (`quantize --target-size/-bpw`)
    [perplexity]  dataset, ctx, chunks, batch
    [bench]       n_prompt, n_gen, repetitions
    [memory]      ctx, kv_type                           # the context the VRAM column and the GPU advice are for
    [chat]        prompt, max_tokens, temperature, top_p, ctx, seed, spec or draft (+ draft_type, draft_p_min)
    [eval]        task, samples, limit, max_tokens, ctx, parallel, seed, reasoning_budget or budgets, loop_guard,
                  spec or draft (+ draft_type, draft_p_min)                                                          # optional

A target is a file size (`"4.2G"`, `"size<=4.2G"`) or bits per weight (`"bpw<=3.5"`); its rung is named by its
label (`MIX-4.2G`, `MIX-3.50bpw`) wherever a ladder rung is named by its type. `[eval] budgets = [256, 1024]`
evaluates each reasoning budget (`quantkit eval --reasoning-budget 256,1024`); `reasoning_budget = 256` is the
one-budget spelling.

Speculative decoding (the tokens do not change, only how fast they come): `spec = "ngram"`, or
`draft = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"` — a Hub repo id, size label or checkpoint folder that the job
downloads, converts and quantizes to `draft_type` (default Q4_0) into `<out>/models/drafts/` once (job/drafts.py),
or a local `.gguf` used as it is (a relative path is relative to the recipe file).

Every key is checked on load: an unknown key, a value of the wrong kind or an unknown quant type is a
`RecipeError` naming the file and the key. The recipes shipped with quantkit live in the repository's
`recipes/` folder; a wheel carries them as the package data `quantkit/recipes_data/` when the build maps them
there (see `recipe_dirs`).
"""
from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..convert import OUTTYPES
from ..models import R1_TEMPERATURE, R1_TOP_P
from ..measure.texts import DATASET_NAMES
from ..convert.embedded import EMBEDDED_MODELS
from ..engine.thinking import LOOP_GUARD_MODES
from ..errors import QuantkitError, RecipeError, RecipeNotFoundError
from ..memory import DRAFT_TYPE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class PerplexitySettings:
    dataset: str = "wikitext-2"
    ctx: int = 512
    chunks: typing.Optional[int] = None  # None: the whole text
    batch: int = 2048


@dataclass(frozen=True)
class BenchSettings:
    n_prompt: int = 512
    n_gen: int = 128
    repetitions: int = 3


@dataclass(frozen=True)
class MemorySettings:
    ctx: int = 8192
    kv_type: str = "f16"


@dataclass(frozen=True)
class ChatDefaults:
    prompt: str = "How many r's are in the word strawberry?"
    max_tokens: int = 1024
    temperature: float = R1_TEMPERATURE
    top_p: float = R1_TOP_P
    ctx: int = 4096
    seed: int = 0
    spec: typing.Optional[str] = None  # "ngram": speculative decoding by n-gram lookup (the tokens do not change)
    draft: typing.Optional[str] = None  # speculative decoding by a draft model (a source, or a local .gguf)
    draft_type: str = DRAFT_TYPE  # what a draft source is quantized to
    draft_p_min: float = 0.75  # the draft stops proposing below this top probability (--draft-p-min)


@dataclass(frozen=True)
class EvalSettings:
    """Reasoning accuracy per rung (`quantkit eval`); a recipe without an [eval] table skips the step."""

    # what is asked: DeepSeek's protocol (temperature 0.6, top-p 0.95), `samples` answers per problem
    task: str = "arith"
    samples: int = 1
    limit: typing.Optional[int] = None
    max_tokens: int = 32768
    seed: int = 0
    # the thought under control: one reasoning budget, or each of several evaluated (none: no limit); the loop
    # guard's mode (off, end or stop: off measures accuracy unaided)
    reasoning_budget: typing.Optional[int] = None
    budgets: typing.Optional[list] = None
    loop_guard: str = "off"
    # how it runs
    ctx: int = 8192
    parallel: int = 4
    spec: typing.Optional[str] = None  # "ngram": speculative decoding by n-gram lookup (the tokens do not change)
    draft: typing.Optional[str] = None  # speculative decoding by a draft model (a source, or a local .gguf)
    draft_type: str = DRAFT_TYPE
    draft_p_min: float = 0.75  # the draft stops proposing below this top probability (--draft-p-min)


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    source: str
    description: str = ""
    revision: typing.Optional[str] = None
    outtype: str = "auto"
    ladder: tuple = ()
    targets: tuple = ()  # quantize.mixes.Target, one per budget mix
    imatrix: typing.Optional[str] = None
    perplexity: PerplexitySettings = field(default_factory=PerplexitySettings)
    bench: BenchSettings = field(default_factory=BenchSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    chat: ChatDefaults = field(default_factory=ChatDefaults)
    eval: typing.Optional[EvalSettings] = None

    @property
    def embedded(self) -> str | None:
        """The embedded model's name for `source = "embedded:NAME"`, else None."""
        return self.source[len(EMBEDDED_PREFIX):] if self.source.startswith(EMBEDDED_PREFIX) else None

    @property
    def rungs(self) -> tuple[str, ...]:
        """The name of every rung: the ladder's types, then the budget mixes' labels."""
        return (*self.ladder, *(t.label for t in self.targets))

    def target_of(self, rung: str):
        """The budget of a mix rung (None for a ladder type)."""
        return next((t for t in self.targets if t.label == rung), None)

    @property
    def imatrix_auto(self) -> bool:
        """`imatrix = "auto"`: computed from the base with the calibration text paired with [perplexity] dataset."""
        return self.imatrix is not None and (self.imatrix == "auto" or self.imatrix.startswith("auto:"))

    @property
    def imatrix_path(self) -> Path | None:
        """A relative imatrix path is relative to the recipe file (None for "auto": the job computes it)."""
        if self.imatrix is None or self.imatrix_auto:
            return None
        return (self.path.parent / self.imatrix).expanduser()


_TABLES = {"perplexity": PerplexitySettings, "bench": BenchSettings, "memory": MemorySettings, "chat": ChatDefaults,
           "eval": EvalSettings}
_OPTIONAL_TABLES = ("eval",)
_TOP_KEYS = ("description", "source", "revision", "outtype", "ladder", "targets", "imatrix")


# ---- where recipes are --------------------------------------------------------------------------------------

def recipe_dirs() -> list[Path]:
    """The folders searched for a recipe name: the repository's `recipes/` (a checkout or an editable install),
    then the package data a wheel carries."""
    package = Path(__file__).resolve().parent.parent  # quantkit/
    return [d for d in (package.parent / "recipes", package / "recipes_data") if d.is_dir()]


def available_recipes() -> list[Path]:
    """Every shipped recipe file, by name (the first folder wins when a name is in both)."""
    found: dict[str, Path] = {}
    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return [found[name] for name in sorted(found)]


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe by name (`smollm2`, `r1-qwen-7b`), R1-Distill size label (`7B`), or path of a .toml file."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.suffix == ".toml" or "/" in text:
        raise RecipeNotFoundError(f"{path} does not exist")
    shipped = available_recipes()
    for candidate in shipped:
        if candidate.stem.lower() == text.lower():
            return candidate
    by_label = _by_size_label(text, shipped)
    if by_label is not None:
        return by_label
    names = ", ".join(p.stem for p in shipped) or "none found"
    raise RecipeNotFoundError(f"no recipe named {text!r} (shipped: {names})")


def _by_size_label(text: str, shipped: list[Path]) -> Path | None:
    from ..models import find_model

    model = find_model(text)
    if model is None:
        return None
    for path in shipped:
        try:
            if load_recipe(path).source.lower() == model.repo_id.lower():
                return path
        except QuantkitError:
            continue
    return None


# ---- loading and checking -----------------------------------------------------------------------------------

def load_recipe(name_or_path: str | Path) -> Recipe:
    """Read and check a recipe; every problem is a RecipeError naming the file and the key."""
    path = find_recipe(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path.name} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path.name} is not UTF-8 text") from None
    return _build(path, data)


def _build(path: Path, data: dict) -> Recipe:
    where = path.name
    for key in data:
        if key not in _TOP_KEYS and key not in _TABLES:
            raise RecipeError(f"{where}: unknown key {key!r}",
                              hint=f"a recipe holds {', '.join(_TOP_KEYS)} and the tables [{'], ['.join(_TABLES)}]")
    if "source" not in data:
        raise RecipeError(f"{where}: no source", hint='add source = "owner/repo", a checkpoint folder, or '
                                                      '"embedded:smollm2"')
    top = {k: data[k] for k in _TOP_KEYS if k in data}
    _check_values(where, "", top, {"description": str, "source": str, "revision": str, "outtype": str,
                                   "ladder": list, "targets": list, "imatrix": str})
    tables = {name: _table(where, name, data.get(name, {}), cls) for name, cls in _TABLES.items()
              if name in data or name not in _OPTIONAL_TABLES}
    recipe = Recipe(name=path.stem, path=path.resolve(), source=top["source"],
                    description=top.get("description", ""), revision=top.get("revision"),
                    outtype=_outtype(where, top.get("outtype", "auto")),
                    ladder=_ladder(where, top.get("ladder", []), top.get("imatrix"), bool(top.get("targets"))),
                    targets=_targets(where, top.get("targets", [])), imatrix=top.get("imatrix"), **tables)
    _check_source(where, recipe)
    _check_dataset(where, recipe.perplexity.dataset)
    for table in ("chat", "eval"):
        if getattr(recipe, table) is not None:
            _check_speculation(where, table, getattr(recipe, table), recipe.path.parent)
    if recipe.eval is not None:
        _check_task(where, recipe.eval.task)
        recipe = dataclasses.replace(recipe, eval=_check_thought(where, recipe.eval))
    return recipe


def _table(where: str, name: str, values, cls) -> object:
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: {name} must be a table ([{name}])")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise RecipeError(f"{where}: unknown key {key!r} in [{name}]", hint=f"[{name}] holds {', '.join(known)}")
    _check_values(where, name, values, {k: _base_type(hints[k]) for k in known})
    return cls(**values)


def _base_type(hint) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _check_values(where: str, table: str, values: dict, kinds: dict[str, type]) -> None:
    for key, value in values.items():
        kind = kinds[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        name = f"[{table}] {key}" if table else key
        if not ok:
            raise RecipeError(f"{where}: {name} must be {_KIND_NAMES[kind]}, not {value!r}")
        least = {"seed": None, "reasoning_budget": 0}.get(key, 1)
        if kind is int and least is not None and value < least:
            raise RecipeError(f"{where}: {name} must be at least {least}, not {value}")
        if key == "loop_guard" and value not in LOOP_GUARD_MODES:
            raise RecipeError(f"{where}: {name} must be one of {', '.join(LOOP_GUARD_MODES)}, not {value!r}")


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list of strings", bool: "true or false"}


def _outtype(where: str, value: str) -> str:
    key = value.strip().upper()
    if key != "AUTO" and key not in OUTTYPES:
        raise RecipeError(f"{where}: unknown outtype {value!r}", hint=f"use auto, {', '.join(OUTTYPES)}")
    return key


def _ladder(where: str, values: list, imatrix: str | None, targets: bool = False) -> tuple[str, ...]:
    from ..quant_types import BASE_TYPES, needs_imatrix, parse_types

    if not values and targets:
        return ()
    if not values:
        raise RecipeError(f"{where}: the ladder is empty", hint='list the quant types to make, e.g. ladder = ["Q4_K_M"], '
                                                                'or budget mixes, targets = ["4.2G"]')
    if not all(isinstance(v, str) for v in values):
        raise RecipeError(f"{where}: ladder must be a list of strings")
    try:
        types = parse_types(values)
    except QuantkitError as e:
        raise RecipeError(f"{where}: ladder: {e.message}", hint=e.hint) from None
    base = [t for t in types if t in BASE_TYPES]
    if base:
        raise RecipeError(f"{where}: ladder holds {', '.join(base)}", hint="the base file's type is `outtype`; "
                                                                           "the ladder lists the quant types made from it")
    if imatrix is None and (need := [t for t in types if needs_imatrix(t)]):
        raise RecipeError(f"{where}: {', '.join(need)} need(s) an importance matrix",
                          hint='add imatrix = "auto" or "FILE.gguf" (llama-imatrix, quantkit imatrix), or drop those types')
    return tuple(types)


def _targets(where: str, values: list) -> tuple:
    """`"4.2G"` / `"size<=4.2G"` (a file size) and `"bpw<=3.5"` (bits per weight) as quantize.mixes.Target."""
    from ..quant_types import parse_size
    from ..quantize.mixes import Target, targets

    out: list[Target] = []
    for value in values:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: targets must be a list of strings, not {value!r}",
                              hint='e.g. targets = ["4.2G", "bpw<=3.5"]')
        text = value.strip()
        try:
            if text.lower().startswith("bpw<="):
                try:
                    bpw = float(text[5:])
                except ValueError:
                    raise RecipeError(f"{where}: targets: {value!r} is not bits per weight",
                                      hint='write it as "bpw<=3.5"') from None
                (target,) = targets(None, [bpw])
            else:
                size = text[6:] if text.lower().startswith("size<=") else text
                target = Target(size=parse_size(size, "target"), text=size)
        except QuantkitError as e:
            if isinstance(e, RecipeError):
                raise
            raise RecipeError(f"{where}: targets: {e.message}", hint=e.hint) from None
        if any(t.label == target.label for t in out):
            raise RecipeError(f"{where}: targets holds {target.label} twice")
        out.append(target)
    return tuple(out)


def _check_thought(where: str, e: EvalSettings) -> EvalSettings:
    from ..engine.thinking import LOOP_GUARD_MODES

    if e.loop_guard not in LOOP_GUARD_MODES:
        raise RecipeError(f"{where}: [eval] loop_guard must be one of {', '.join(LOOP_GUARD_MODES)}, not "
                          f"{e.loop_guard!r}")
    if e.budgets is not None and e.reasoning_budget is not None:
        raise RecipeError(f"{where}: [eval] has both reasoning_budget and budgets",
                          hint="keep one: budgets = [256, 1024] evaluates each")
    if e.budgets is None:
        return e
    if not e.budgets or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in e.budgets):
        raise RecipeError(f"{where}: [eval] budgets must be a list of thought-token counts (integers ≥ 0), not "
                          f"{e.budgets!r}", hint="e.g. budgets = [256, 1024]")
    if len(set(e.budgets)) != len(e.budgets):
        raise RecipeError(f"{where}: [eval] budgets holds a budget twice")
    return dataclasses.replace(e, budgets=tuple(sorted(e.budgets)))


def _check_speculation(where: str, table: str, settings, folder: Path) -> None:
    """spec and draft: one or the other; a known spec mode; a draft type libllama makes without an imatrix."""
    from ..engine.speculative import SPEC_MODES
    from ..quant_types import needs_imatrix, parse_types

    if settings.spec is not None and settings.spec != "ngram":
        modes = ", ".join(m for m in SPEC_MODES if m != "draft")
        raise RecipeError(f"{where}: [{table}] spec must be {modes}, not {settings.spec!r}",
                          hint=f'for a draft model write draft = "REPO" in [{table}]')
    if settings.spec is not None and settings.draft is not None:
        raise RecipeError(f"{where}: [{table}] has both spec and draft",
                          hint='keep one: spec = "ngram" (no second model) or draft = "REPO" (a draft model)')
    local = local_draft(settings.draft, folder)
    if local is not None and not local.is_file():
        raise RecipeError(f"{where}: [{table}] draft {settings.draft} does not exist ({local})",
                          hint="a .gguf draft is a local file (relative to the recipe); a Hub draft is a repo id")
    try:
        types = parse_types([settings.draft_type])
    except QuantkitError as e:
        raise RecipeError(f"{where}: [{table}] draft_type: {e.message}", hint=e.hint) from None
    if not 0 <= settings.draft_p_min <= 1:
        raise RecipeError(f"{where}: [{table}] draft_p_min must be in [0, 1], not {settings.draft_p_min}")
    if len(types) != 1 or needs_imatrix(types[0]):
        raise RecipeError(f"{where}: [{table}] draft_type must be one quant type made without an importance matrix, "
                          f"not {settings.draft_type!r}", hint='e.g. draft_type = "Q4_0"')


def local_draft(draft: str | None, folder: Path) -> Path | None:
    """A draft named by a .gguf path, relative to the recipe's folder (None for a source the job makes)."""
    if draft is None or not draft.lower().endswith(".gguf"):
        return None
    path = Path(draft).expanduser()
    return path if path.is_absolute() else folder / path


def _check_source(where: str, recipe: Recipe) -> None:
    name = recipe.embedded
    if name is not None and name not in EMBEDDED_MODELS:
        raise RecipeError(f"{where}: unknown embedded model {name!r}",
                          hint=f"use {', '.join(EMBEDDED_PREFIX + n for n in EMBEDDED_MODELS)}")


def _check_dataset(where: str, dataset: str) -> None:
    if dataset not in DATASET_NAMES:
        raise RecipeError(f"{where}: unknown [perplexity] dataset {dataset!r}", hint=f"use {', '.join(DATASET_NAMES)}")


def _check_task(where: str, task: str) -> None:
    from ..eval.tasks import TASK_NAMES

    if task not in TASK_NAMES:
        raise RecipeError(f"{where}: unknown eval task {task!r}", hint=f"use one of {', '.join(TASK_NAMES)}")
