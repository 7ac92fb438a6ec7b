"""One size grammar (quantkit.quant_types.parse_size) behind every size flag: the same spellings give the same
bytes, and the same bad ones the same one-line refusal, whichever flag of whichever command they are given to."""
from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.errors import InvalidArgumentError
from quantkit.quant_types import SIZE_HINT, parse_size

runner = CliRunner()

GOOD = {
    "4GiB": 4 * 2**30, "4gib": 4 * 2**30, "4Gi": 4 * 2**30, "4G": 4 * 10**9, "4GB": 4 * 10**9, "4 G": 4 * 10**9,
    "4.2G": 4_200_000_000, "4.2GB": 4_200_000_000, "3.5GiB": int(3.5 * 2**30), "500M": 500 * 10**6,
    "500MiB": 500 * 2**20, "64K": 64_000, "64KiB": 65_536, "1T": 10**12, "2TiB": 2 * 2**40, "123456789": 123456789,
    "123456789B": 123456789, " 48G ": 48 * 10**9,
}
BAD = ["", "lots", "four gigs", "G", "GiB", "-1G", "0", "0G", "1.5", "4.2.1G", "1e9", "4XB", "4iB", "4GiBB",
       "4 GiB B", ".5G"]


@pytest.mark.parametrize("text, n_bytes", GOOD.items())
def test_spellings(text, n_bytes):
    assert parse_size(text) == n_bytes


@pytest.mark.parametrize("text", BAD)
def test_refusals(text):
    with pytest.raises(InvalidArgumentError, match="is not a size"):
        parse_size(text)


class _Reached(typer.Exit):
    """Raised by a stub where the command hands the parsed sizes to the library."""


def _stub(monkeypatch, module: str, name: str, seen: dict, pick):
    def stub(*args, **kwargs):
        seen["sizes"] = pick(args, kwargs)
        raise _Reached(42)

    monkeypatch.setattr(f"{module}.{name}", stub)


def _split_size(args, kwargs):
    return [kwargs["split_max_size"]]


def _target_sizes(args, kwargs):
    return [t.size for t in kwargs["targets"]]


def _budget_sizes(args, kwargs):
    return [t.size for t in args[1]]


# every size flag: (flag, the command line before it, where the parsed value reaches the library, what it got)
FLAGS = {
    "convert --split-max-size": ("--split-max-size", ["convert", "1.5B"], ("quantkit.convert", "convert"),
                                 _split_size),
    "quantize --split-max-size": ("--split-max-size", ["quantize", "base.gguf"],
                                  ("quantkit.quantize.ladder", "quantize_file"), _split_size),
    "convert --target-size": ("--target-size", ["convert", "1.5B"], ("quantkit.convert", "convert"),
                              _target_sizes),
    "quantize --target-size": ("--target-size", ["quantize", "base.gguf"], ("quantkit.quantize.ladder", "quantize_file"),
                               _target_sizes),
    "estimate-memory --target-size": ("--target-size", ["estimate-memory", "1.5B", "--json"],
                                      ("quantkit.quantize.budget", "plan_budgets"), _budget_sizes),
}


@pytest.fixture(params=FLAGS, ids=str)
def flag(request, monkeypatch):
    name, before, (module, function), pick = FLAGS[request.param]
    seen: dict = {}
    _stub(monkeypatch, module, function, seen, pick)
    # estimate-memory plans from a local float GGUF: take the label's place as one
    monkeypatch.setattr("quantkit.quantize.budget.budget_base", lambda target: target)
    return name, before, seen


def test_every_size_flag_takes_the_same_spellings(flag):
    name, before, seen = flag
    for text, n_bytes in GOOD.items():
        result = runner.invoke(app, [*before, name, text])
        assert result.exit_code == 42, (text, result.output)
        assert seen.pop("sizes") == [n_bytes], text


def test_every_size_flag_refuses_the_same_spellings_the_same_way(flag):
    name, before, seen = flag
    for text in BAD:
        result = runner.invoke(app, [*before, name, text])
        assert result.exit_code == 1, (text, result.output)
        assert result.stderr == f"error: {name} {text!r} is not a size ({SIZE_HINT})\n", text
        assert result.stdout == "" and "sizes" not in seen
