"""What one compiled program holds, computes and moves, per device.

Memory comes from the compiled program itself (`memory_analysis()`), and a program the
compiler refuses for lack of memory is reported with the bytes it asked for. XLA's
`cost_analysis()` counts a loop body once however many times it runs, so collectives are
totalled from the compiled HLO loop by loop (`HloModule`) and bytes accessed are scaled
to the whole step (`compiled_cost`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import jax
import numpy as np

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
                "f8e4m3fn": 1, "f8e5m2": 1}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")


@dataclass(frozen=True)
class Memory:
    """Bytes per device of one compiled program."""

    state: int  # parameters + optimiser state: the arguments that persist between steps
    arguments: int
    outputs: int
    aliased: int  # outputs written into donated arguments
    temporaries: int
    code: int

    @property
    def total(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

    @property
    def other(self) -> int:
        """Everything the program needs beyond the persistent state."""
        return self.total - self.state

    def to_json(self) -> dict:
        return {"state": self.state, "other": self.other, "arguments": self.arguments,
                "outputs": self.outputs, "aliased": self.aliased,
                "temporaries": self.temporaries, "code": self.code, "total": self.total}


@dataclass(frozen=True)
class Cost:
    """Per-device work of one whole step."""

    flops: float
    bytes_accessed: float
    collective_bytes: dict[str, float] = field(default_factory=dict)


class DoesNotFit(Exception):
    """The compiler refused the program: it needs more memory than a device has."""

    def __init__(self, needed: int | None, available: int | None, message: str):
        super().__init__(message)
        self.needed, self.available = needed, available


def compile_lowered(lowered):
    """Compile, turning the compiler's out-of-memory refusal into `DoesNotFit`."""
    try:
        return lowered.compile()
    except Exception as err:  # noqa: BLE001 - XlaRuntimeError has no stable import path
        text = str(err)
        if "RESOURCE_EXHAUSTED" not in text and "exceeds available" not in text:
            raise
        needed, available = _exhausted_sizes(text)
        raise DoesNotFit(needed, available, text.splitlines()[0][:500]) from err


_SIZE = r"([\d.]+)([KMGT]?)"


def _exhausted_sizes(text: str) -> tuple[int | None, int | None]:
    """Needed and available bytes from messages like "... (58.02G) exceeds available HBM
    (15.75G)" or "Used 21.07G of 15.75G hbm"."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

    def size(number, unit) -> int:
        return int(float(number) * units[unit])

    match = re.search(r"\(" + _SIZE + r"\) exceeds available \S+ \(" + _SIZE + r"\)", text)
    if not match:
        match = re.search(r"Used " + _SIZE + " of " + _SIZE, text)
    if not match:
        return None, None
    return size(*match.group(1, 2)), size(*match.group(3, 4))


def memory(compiled, state_bytes: int) -> Memory:
    m = compiled.memory_analysis()
    return Memory(state=state_bytes, arguments=m.argument_size_in_bytes,
                  outputs=m.output_size_in_bytes, aliased=m.alias_size_in_bytes,
                  temporaries=m.temp_size_in_bytes, code=m.generated_code_size_in_bytes)


def compiled_cost(compiled, flops_per_device: float) -> Cost:
    """Per-device work of one run of a compiled program whose whole-step FLOPs are known.

    XLA's "flops" and "bytes accessed" count each loop body once; the loops (layers,
    micro-batches) hold nearly all of both, so the bytes are scaled by the same factor
    that makes the FLOPs whole. Collectives are counted loop by loop (`HloModule`).
    """
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per program
        analysis = analysis[0]
    once_flops = float(analysis.get("flops", 0.0))
    scale = flops_per_device / once_flops if once_flops > 0 else 1.0
    return Cost(flops_per_device, float(analysis.get("bytes accessed", 0.0)) * scale,
                HloModule(compiled.as_text()).collective_bytes())


class HloModule:
    """Just enough of compiled HLO text to total its traffic.

    A loop's trip count is read from its condition (`compare(i, constant(N)),
    direction=LT`, what `lax.scan` and the partitioner's windowed matmuls compile to); a
    computation's multiplicity is the product of the trip counts of the loops around it.
    A collective moves the larger of its operands and its results (the gathered buffer of
    an all-gather, the buffer before a reduce-scatter).
    """

    _HEADER = re.compile(r"^(ENTRY\s+)?%(?P<name>[\w.\-]+)\s*\(.*\{\s*$")
    _INSTRUCTION = re.compile(
        r"^\s*(ROOT\s+)?%(?P<name>[\w.\-]+)\s*=\s*(?P<type>.*?)\s(?P<op>[a-z][\w\-]*)\((?P<rest>.*)$")

    def __init__(self, text: str):
        self.computations: dict[str, list[re.Match]] = {}
        self.types: dict[str, str] = {}
        self.entry = ""
        current = None
        for line in text.splitlines():
            header = self._HEADER.match(line)
            if header:
                current = header.group("name")
                self.computations[current] = []
                if header.group(1):
                    self.entry = current
                continue
            if current is None:
                continue
            instruction = self._INSTRUCTION.match(line)
            if instruction:
                self.computations[current].append(instruction)
                self.types[instruction.group("name")] = instruction.group("type")

    def _operands(self, rest: str) -> list[str]:
        depth, end = 1, len(rest)
        for k, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                end = k
                break
        return re.findall(r"%([\w.\-]+)", rest[:end])

    def _trip_count(self, condition: str) -> int:
        for instruction in self.computations.get(condition, []):
            if instruction.group("op") == "constant":
                value = re.match(r"(-?\d+)\)", instruction.group("rest"))
                if value:
                    return max(int(value.group(1)), 1)
        return 1

    def multiplicity(self) -> dict[str, float]:
        """How often each computation runs per run of the program."""
        calls: dict[str, list[tuple[str, int]]] = {}
        callers: dict[str, int] = {}
        for name, instructions in self.computations.items():
            calls[name] = []
            for instruction in instructions:
                rest = instruction.group("rest")
                if instruction.group("op") == "while":
                    body = re.search(r"body=%([\w.\-]+)", rest).group(1)
                    condition = re.search(r"condition=%([\w.\-]+)", rest).group(1)
                    trips = self._trip_count(condition)
                    calls[name] += [(body, trips), (condition, trips + 1)]
                    continue
                for key in ("calls", "to_apply", "branch_computations"):
                    for group in re.findall(key + r"=\{?([^,}]+(?:,\s*%[^,}]+)*)\}?", rest):
                        calls[name] += [(c, 1) for c in re.findall(r"%([\w.\-]+)", group)]
            for callee, _ in calls[name]:
                callers[callee] = callers.get(callee, 0) + 1
        # Callers before callees (the call graph has no cycles).
        counts = dict.fromkeys(self.computations, 0.0)
        counts[self.entry] = 1.0
        ready = [n for n in self.computations if not callers.get(n)]
        while ready:
            name = ready.pop()
            for callee, times in calls.get(name, []):
                counts[callee] = counts.get(callee, 0.0) + counts[name] * times
                callers[callee] -= 1
                if callers[callee] == 0:
                    ready.append(callee)
        return counts

    def collective_bytes(self) -> dict[str, float]:
        """Bytes each collective kind moves per run of the program."""
        counts = self.multiplicity()
        totals = dict.fromkeys(COLLECTIVES, 0.0)
        for name, instructions in self.computations.items():
            times = counts.get(name, 0.0)
            for instruction in instructions if times else ():
                op = instruction.group("op")
                kind = op.removesuffix("-start")
                if kind not in totals:
                    continue
                result = _array_bytes(instruction.group("type"))
                operands = sum(_array_bytes(self.types.get(o, ""))
                               for o in self._operands(instruction.group("rest")))
                if op.endswith("-start") and instruction.group("type").startswith("("):
                    result = max(result - operands, 0)  # (operands..., results...)
                totals[kind] += times * max(result, operands)
        return totals


def _array_bytes(text: str) -> int:
    total = 0
    for dtype, dims in _ARRAY.findall(text):
        shape = [int(d) for d in dims.split(",") if d]
        total += _DTYPE_BYTES[dtype] * int(np.prod(shape, dtype=np.int64))
    return total


def sharded_bytes(abstract, shardings) -> int:
    """Bytes one device holds of a tree of arrays laid out by `shardings` (the largest
    shard, which is what every device allocates)."""
    total = 0
    for shape, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
        shard = sharding.shard_shape(shape.shape)
        total += int(np.prod(shard, dtype=np.int64)) * np.dtype(shape.dtype).itemsize
    return total
