"""What one compiled program holds, computes and moves, per device.

Memory comes from the compiled program itself (`memory_analysis()`), and a program the
compiler refuses for lack of memory is reported with the bytes it asked for. XLA's
`cost_analysis()` counts a loop body once however many times it runs, so collectives are
totalled from the compiled HLO loop by loop (`HloModule`) and bytes accessed are scaled
by how much more the loops move when counted as often as they run (`compiled_cost`).
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

    XLA's "bytes accessed" counts each loop body once. The HLO walker counts the program
    both ways, loops once and loops as often as they run; XLA's figure is scaled by that
    ratio, so loops (layers, micro-batches) count fully while work outside them (the
    optimiser update) counts once, each measured the way XLA measures it. Collectives are
    counted loop by loop too.
    """
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per program
        analysis = analysis[0]
    hlo = HloModule(compiled.as_text())
    once = hlo.traffic_bytes(loops=False)
    scale = hlo.traffic_bytes() / once if once > 0 else 1.0
    return Cost(flops_per_device, float(analysis.get("bytes accessed", 0.0)) * scale,
                hlo.collective_bytes())


class HloModule:
    """Just enough of compiled HLO text to total its traffic.

    A loop's trip count is read from its condition (`compare(i, constant(N)),
    direction=LT`, what `lax.scan` and the partitioner's windowed matmuls compile to); a
    computation's multiplicity is the product of the trip counts of the loops around it.
    A collective moves the larger of its operands and its results (the gathered buffer of
    an all-gather, the buffer before a reduce-scatter). libtpu may split one asynchronous
    collective into a start, continuations spread over a loop's iterations (to overlap it
    with the layers) and a done, each printed with the whole collective inside: only the
    start, whose `async_collective_fusion_config` has flag_start -1, is counted.
    """

    _HEADER = re.compile(r"^(ENTRY\s+)?%(?P<name>[\w.\-]+)\s*\(.*\{\s*$")
    _CONTINUATION = re.compile(r'"async_collective_fusion_config":\{"flag_start":"(?!-1")')
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

    def _sequential(self) -> set[str]:
        """Computations that run as programs (the entry, loop bodies and conditions, called
        and conditional computations), as opposed to those embedded in one instruction
        (fusion bodies, reduction functions)."""
        found, todo = {self.entry}, [self.entry]
        while todo:
            for instruction in self.computations.get(todo.pop(), []):
                op, rest = instruction.group("op"), instruction.group("rest")
                keys = {"while": ("body", "condition"), "call": ("to_apply",),
                        "conditional": ("branch_computations", "true_computation",
                                        "false_computation")}.get(op, ())
                for key in keys:
                    for group in re.findall(key + r"=\{?([^}\s]+(?:,\s*%[^,}\s]+)*)\}?", rest):
                        for callee in re.findall(r"%([\w.\-]+)", group):
                            if callee not in found:
                                found.add(callee)
                                todo.append(callee)
        return found

    def _fusion_bytes(self, instruction: re.Match) -> int:
        """HBM bytes a fusion reads and writes: each operand whole, except one the fused
        computation only slices (a layer's weights out of the stacked [layers, ...] array:
        the slices are read) or updates in place (a scan's stacked outputs: the update is
        written)."""
        rest = instruction.group("rest")
        operands = self._operands(rest)
        called = re.search(r"calls=%([\w.\-]+)", rest)
        body = self.computations.get(called.group(1), []) if called else []
        params, users = {}, {}
        for inner in body:
            if inner.group("op") == "parameter":
                params[int(re.match(r"(\d+)", inner.group("rest")).group(1))] = inner.group("name")
            for operand in self._operands(inner.group("rest")):
                users.setdefault(operand, []).append(inner)
        root = next((i for i in body if i.group(1)), None)
        by_name = {i.group("name"): i for i in body}
        while root is not None and root.group("op") == "bitcast":  # a view, not a copy
            root = by_name.get(self._operands(root.group("rest"))[0])
        written = _array_bytes(instruction.group("type"))
        in_place = None
        if root is not None and root.group("op") == "dynamic-update-slice":
            base, update = self._operands(root.group("rest"))[:2]
            in_place, written = base, _array_bytes(self.types.get(update, ""))
        total = written
        for k, operand in enumerate(operands):
            name = params.get(k)
            if name is not None and name == in_place:
                continue
            readers = users.get(name, [])
            if readers and all(r.group("op") in ("dynamic-slice", "slice")
                               and self._operands(r.group("rest"))[0] == name
                               for r in readers):
                total += sum(_array_bytes(r.group("type")) for r in readers)
            else:
                total += _array_bytes(self.types.get(operand, ""))
        return total

    def traffic_bytes(self, loops: bool = True) -> float:
        """HBM bytes one run of the program reads and writes: every instruction of every
        computation that runs, times how often it runs (`loops=False`: once, as XLA's cost
        analysis counts), counting operands and results, with slicing and in-place updates
        counted by the bytes they touch. Collectives are not included (`collective_bytes`
        counts them)."""
        counts = self.multiplicity() if loops else dict.fromkeys(self.computations, 1.0)
        total = 0.0
        for name in self._sequential():
            times = counts.get(name, 0.0)
            for instruction in self.computations[name] if times else ():
                op = instruction.group("op")
                if op in _NO_TRAFFIC or op.removesuffix("-start") in COLLECTIVES \
                        or op.endswith("-done") or op.endswith("-update"):
                    continue
                result = _array_bytes(instruction.group("type"))
                if op == "fusion":
                    moved = self._fusion_bytes(instruction)
                elif op in ("dynamic-slice", "slice"):
                    moved = 2 * result
                elif op == "dynamic-update-slice":
                    update = self._operands(instruction.group("rest"))[1]
                    moved = 2 * _array_bytes(self.types.get(update, ""))
                else:
                    moved = result + sum(_array_bytes(self.types.get(o, ""))
                                         for o in self._operands(instruction.group("rest")))
                total += times * moved
        return total

    def collective_bytes(self) -> dict[str, float]:
        """Bytes each collective kind moves per run of the program."""
        counts = self.multiplicity()
        totals = dict.fromkeys(COLLECTIVES, 0.0)
        for name, instructions in self.computations.items():
            times = counts.get(name, 0.0)
            for instruction in instructions if times else ():
                op = instruction.group("op")
                kind = op.removesuffix("-start")
                if kind not in totals or self._CONTINUATION.search(instruction.group("rest")):
                    continue
                result = _array_bytes(instruction.group("type"))
                operands = sum(_array_bytes(self.types.get(o, ""))
                               for o in self._operands(instruction.group("rest")))
                if op.endswith("-start") and instruction.group("type").startswith("("):
                    result = max(result - operands, 0)  # (operands..., results...)
                totals[kind] += times * max(result, operands)
        return totals


# Instructions that move no HBM data of their own.
_NO_TRAFFIC = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "while",
               "call", "conditional", "after-all", "partition-id", "replica-id",
               "opt-barrier", "iota"}


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
