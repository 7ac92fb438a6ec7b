"""A seeded mutation fuzzer for the two parsers that read strangers' files: the GGUF header parser
(quantkit.gguf.header.parse_header) and the safetensors header reader
(quantkit.convert.checkpoint.parse_safetensors_header).

Each case takes a real file (SmolLM2's GGUF header region and checkpoint, the tiny fixtures), applies one to three
mutations — bit flips, truncation, a length or count field set to a boundary value, a chunk inserted or deleted,
and for safetensors a JSON entry given a wrong dtype, shape or offsets — and parses the result. The only outcomes
allowed are success and a typed quantkit error (a QuantkitError subclass); anything else is a finding. Case i of
seed s is `random.Random(f"{s}:{target}:{i}")`, so every finding can be replayed alone (`--replay i`).

Run as `python -m tests._fixtures.fuzz gguf|safetensors --cases N --seed S`: it caps its own address space (so
an allocation sized by a hostile length fails instead of passing unseen) and prints one JSON summary: cases,
outcomes by error type, findings, the slowest case, peak RSS and seconds.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import resource
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ADDRESS_SPACE = 4 << 30
_BOUNDARY = (0, 1, 2, 7, 8, 31, 32, 33, 255, 2**16, 2**24, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62,
             2**63 - 1, 2**63, 2**64 - 1)


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes  # the region a parser reads (a GGUF's header, a safetensors file's length and JSON)
    size: int  # the whole file's size: the parser checks offsets against it
    fields: tuple[tuple[int, int], ...] = ()  # (offset, width) of the length, count and type fields
    weight: float = 1.0  # share of the cases; a big seed is slow to parse and gets few


class _Virtual(io.RawIOBase):
    """A file of `size` bytes whose first bytes are `data` and the rest zeros: the tensor data a header parser
    never reads need not be in memory."""

    def __init__(self, data: bytes, size: int, seekable: bool = True):
        self.data, self.size, self.pos, self._seekable = data, size, 0, seekable

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("not seekable")
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def readinto(self, buffer) -> int:
        end = min(self.size, self.pos + len(buffer))
        out = self.data[self.pos:end]
        out += bytes(max(0, end - self.pos - len(out)))
        buffer[:len(out)] = out
        self.pos += len(out)
        return len(out)


# ---- seeds -------------------------------------------------------------------------------------------------

def gguf_fields(data: bytes, per_array: int = 40) -> tuple[tuple[int, int], ...]:
    """Where a valid GGUF header keeps its counts, lengths and types (at most `per_array` string lengths per
    array: a vocabulary has 150,000)."""
    fields: list[tuple[int, int]] = [(0, 4), (4, 4), (8, 8), (16, 8)]
    pos = 24
    (n_tensors,), (n_kv,) = struct.unpack_from("<Q", data, 8), struct.unpack_from("<Q", data, 16)
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def string() -> None:
        nonlocal pos
        fields.append((pos, 8))
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]

    for _ in range(n_kv):
        string()
        fields.append((pos, 4))
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if vtype == 8:
            string()
        elif vtype == 9:
            fields += [(pos, 4), (pos + 4, 8)]
            itype, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if itype == 8:
                for i in range(n):
                    if i < per_array // 2 or i >= n - per_array // 2:
                        fields.append((pos, 8))
                    pos += 8 + struct.unpack_from("<Q", data, pos)[0]
            else:
                pos += sizes[itype] * n
        else:
            pos += sizes[vtype]
    for _ in range(n_tensors):
        string()
        (n_dims,) = struct.unpack_from("<I", data, pos)
        fields += [(pos, 4)] + [(pos + 4 + 8 * d, 8) for d in range(n_dims)]
        pos += 4 + 8 * n_dims
        fields += [(pos, 4), (pos + 4, 8)]
        pos += 12
    return tuple(fields)


def gguf_seed(name: str, path_or_data: Path | bytes, weight: float = 1.0) -> Seed:
    from quantkit.gguf.header import parse_header

    if isinstance(path_or_data, Path):
        size = path_or_data.stat().st_size
        with open(path_or_data, "rb") as f:
            header = parse_header(f, name, size)
            f.seek(0)
            data = f.read(header.header_bytes)
    else:
        data, size = path_or_data, len(path_or_data)
    return Seed(name, data, size, gguf_fields(data), weight)


def safetensors_seed(name: str, path: Path, weight: float = 1.0) -> Seed:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(0)
        data = f.read(8 + n)
    return Seed(name, data, path.stat().st_size, ((0, 8),), weight)


def gguf_seeds() -> list[Seed]:
    from . import gguf_bytes as G
    from .bad_inputs import good_inputs
    from .gguf_files import write_tiny_gguf
    from reference.smollm2 import smollm2_gguf
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tiny = (write_tiny_gguf(Path(tmp) / "t.gguf")).read_bytes()
    quant = G.build(tensors=[G.Tensor("a.weight", (64, 2), 2), G.Tensor("b.weight", (256,), 12)])
    return [gguf_seed("hand-built", G.build().data, 3), gguf_seed("hand-built Q4_0/Q4_K", quant.data, 2),
            gguf_seed("gguf-py tiny", tiny, 3), gguf_seed("tiny llama (3k vocab)", good_inputs().model, 1.9),
            gguf_seed("SmolLM2 header", smollm2_gguf(), 0.2)]


def safetensors_seeds() -> list[Seed]:
    from quantkit.convert.embedded import embedded_checkpoint

    from .bad_inputs import good_inputs
    from reference.tiny import tiny_checkpoint

    return [safetensors_seed("tiny llama (quantkit export)", good_inputs().checkpoint / "model.safetensors", 4),
            safetensors_seed("tiny qwen2 (transformers)", tiny_checkpoint("qwen2") / "model.safetensors", 4),
            safetensors_seed("SmolLM2 (quantkit export)", embedded_checkpoint() / "model.safetensors", 2)]


# ---- mutations ---------------------------------------------------------------------------------------------

def _boundary(rng: random.Random, old: int, width: int) -> int:
    choice = rng.choice([*_BOUNDARY, old + 1, old - 1, old * 2, old * 1000, rng.getrandbits(8 * width)])
    return choice % (1 << (8 * width))


def _flip(rng, data: bytearray, size: int, seed: Seed) -> tuple[bytearray, int, str]:
    for _ in range(rng.randint(1, 4)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return data, size, "flip"


def _field(rng, data: bytearray, size: int, seed: Seed) -> tuple[bytearray, int, str]:
    fields = [f for f in seed.fields if f[0] + f[1] <= len(data)]
    if not fields:
        return _flip(rng, data, size, seed)
    at, width = rng.choice(fields)
    old = int.from_bytes(data[at:at + width], "little")
    data[at:at + width] = _boundary(rng, old, width).to_bytes(width, "little")
    return data, size, "field"


def _truncate(rng, data: bytearray, size: int, seed: Seed) -> tuple[bytearray, int, str]:
    if rng.random() < 0.5 and seed.fields:  # at a field: a section boundary
        cut = rng.choice(seed.fields)[0] + rng.choice([0, 1, 4, 8])
    else:
        cut = rng.randrange(len(data) + 1)
    cut = min(cut, len(data))
    return data[:cut], cut, "truncate"


def _splice(rng, data: bytearray, size: int, seed: Seed) -> tuple[bytearray, int, str]:
    at = rng.randrange(len(data) + 1)
    n = rng.randint(1, 64)
    if rng.random() < 0.5:
        del data[at:at + n]
        return data, max(len(data), size - n), "delete"
    chunk = bytes(data[rng.randrange(len(data) + 1):][:n]) or b"\xff" * n
    data[at:at] = chunk
    return data, size + len(chunk), "insert"


_BAD_VALUES = [-1, 0, 1, 2**31, 2**32, 2**40, 2**63, 2**64, 2**70, 1.5, "3", None, [], {}, True, [1, 2, 3]]
_DTYPES = ["BF16", "F16", "F32", "F64", "I64", "I8", "BOOL", "F8_E4M3", "", "bf16", 5, None, ["BF16"]]


def _json_entry(rng, data: bytearray, size: int, seed: Seed) -> tuple[bytearray, int, str]:
    """Give one safetensors entry a wrong dtype, shape or offsets (or drop or duplicate it), as valid JSON."""
    try:
        (n,) = struct.unpack_from("<Q", data)
        header = json.loads(bytes(data[8:8 + n]))
        names = [k for k in header if k != "__metadata__"]
    except Exception:
        return _flip(rng, data, size, seed)
    if not names:
        return _flip(rng, data, size, seed)
    name = rng.choice(names)
    entry = header[name] if isinstance(header[name], dict) else {}
    what = rng.choice(["dtype", "shape", "offsets", "offsets", "drop", "twin", "entry", "metadata"])
    if what == "dtype":
        entry["dtype"] = rng.choice(_DTYPES)
    elif what == "shape" and isinstance(entry.get("shape"), list):
        shape = entry["shape"]
        if shape and rng.random() < 0.8:
            shape[rng.randrange(len(shape))] = rng.choice(_BAD_VALUES)
        else:
            entry["shape"] = rng.choice([[], [0], [2**40, 2**40], "x", None, [-1, -1]])
    elif what == "offsets" and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2 \
            and all(isinstance(o, int) for o in entry["data_offsets"]):
        start, end = entry["data_offsets"]
        other = header[rng.choice(names)]
        other = other.get("data_offsets") if isinstance(other, dict) else None
        entry["data_offsets"] = rng.choice([[end, start], [start, end + 2], [start, 2**64], [-2, end], other,
                                            [start], [start, end, end], [start, rng.choice(_BAD_VALUES)]])
    elif what == "drop":
        del header[name]
    elif what == "twin":  # the same tensor under a second name (its bytes claimed twice)
        header[name + ".copy"] = dict(entry)
    elif what == "entry":
        header[name] = rng.choice(_BAD_VALUES)
    else:
        header["__metadata__"] = rng.choice(_BAD_VALUES)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    out = bytearray(struct.pack("<Q", len(raw)) + raw)
    return out, size - (8 + n) + len(out), f"json {what}"


def _length(rng, data: bytearray, size: int, seed: Seed) -> tuple[bytearray, int, str]:
    (old,) = struct.unpack_from("<Q", data) if len(data) >= 8 else (0,)
    value = _boundary(rng, old, 8)
    return bytearray(struct.pack("<Q", value)) + data[8:], size, "length"


GGUF_MUTATIONS = [(_flip, 3), (_field, 4), (_truncate, 2), (_splice, 1)]
SAFETENSORS_MUTATIONS = [(_flip, 2), (_json_entry, 4), (_length, 1), (_truncate, 1), (_splice, 1)]


# ---- the run -----------------------------------------------------------------------------------------------

def _parse_gguf(data: bytes, size: int) -> None:
    from quantkit.gguf.header import parse_header

    # a local file steps back over what it read past a string array; a stream that cannot is read string by string
    seekable = len(data) % 2 == 0
    parse_header(io.BufferedReader(_Virtual(data, size, seekable)), "fuzzed.gguf", size)


def _parse_safetensors(data: bytes, size: int) -> None:
    from quantkit.convert.checkpoint import parse_safetensors_header

    parse_safetensors_header(io.BufferedReader(_Virtual(data, size)), Path("fuzzed.safetensors"), size)


TARGETS: dict[str, tuple[Callable[[], list[Seed]], list, Callable[[bytes, int], None]]] = {
    "gguf": (gguf_seeds, GGUF_MUTATIONS, _parse_gguf),
    "safetensors": (safetensors_seeds, SAFETENSORS_MUTATIONS, _parse_safetensors),
}


def mutate(target: str, seeds: list[Seed], seed: int, i: int) -> tuple[Seed, bytes, int, list[str]]:
    rng = random.Random(f"{seed}:{target}:{i}")
    mutations = TARGETS[target][1]
    chosen = rng.choices(seeds, weights=[s.weight for s in seeds])[0]
    data, size, done = bytearray(chosen.data), chosen.size, []
    for _ in range(rng.choice([1, 1, 2, 3])):
        op = rng.choices([m for m, _ in mutations], weights=[w for _, w in mutations])[0]
        data, size, name = op(rng, data, size, chosen)
        done.append(name)
    return chosen, bytes(data), max(size, len(data)), done


def run(target: str, cases: int, seed: int = 0, replay: int | None = None) -> dict:
    from quantkit.errors import QuantkitError

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    make_seeds, _, parse = TARGETS[target]
    seeds = make_seeds()
    for s in seeds:  # the seeds themselves are valid
        parse(s.data, s.size)
    outcomes: Counter = Counter()
    by_seed: Counter = Counter()
    findings: list[dict] = []
    slowest = (0.0, -1)
    start = time.perf_counter()
    for i in ([replay] if replay is not None else range(cases)):
        chosen, data, size, done = mutate(target, seeds, seed, i)
        by_seed[chosen.name] += 1
        t0 = time.perf_counter()
        try:
            parse(data, size)
            outcomes["accepted"] += 1
        except QuantkitError as e:
            outcomes[type(e).__name__] += 1
        except BaseException as e:  # a finding: anything but a typed error
            outcomes[f"untyped {type(e).__name__}"] += 1
            findings.append({"case": i, "seed": chosen.name, "mutations": done, "error": f"{type(e).__name__}: "
                             f"{str(e)[:200]}"})
        took = time.perf_counter() - t0
        slowest = max(slowest, (took, i))
    return {"target": target, "cases": sum(outcomes.values()), "seed": seed,
            "seeds": {s.name: {"bytes": len(s.data), "cases": by_seed[s.name]} for s in seeds},
            "outcomes": dict(outcomes.most_common()),
            "findings": findings[:50], "n_findings": len(findings), "slowest_case_s": round(slowest[0], 4),
            "slowest_case": slowest[1], "seconds": round(time.perf_counter() - start, 2),
            "peak_rss_mib": round(_peak_rss_kib() / 1024, 1)}


def _peak_rss_kib() -> int:
    """This process's own peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux carries that across execve from the
    forked copy of the parent, so a child of a large pytest process would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay", type=int, default=None, help="run only case N")
    args = parser.parse_args()
    json.dump(run(args.target, args.cases, args.seed, args.replay), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
