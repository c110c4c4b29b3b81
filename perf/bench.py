"""What an op's benchmark is made of (``Bench``), checked when it is defined: a bench that lacks
a field, or whose fields disagree, fails at import, not halfway through a sweep on the GPU.

Timing modes (docs/benchmarking.md), each cold and hot, per call inside a CUDA graph:
- ``b2b``: R calls of the op back to back, PDL on (the op after itself);
- ``alone``: the same with PDL off: each call stands alone. An implementation without PDL always
  runs so, and its back-to-back figure is recorded as ``alone``;
- ``chain``: R pairs [one-kernel torch producer writing the op's main input -> the op], minus the
  graph of the producers alone: what the op adds after an ordinary producer.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

B2B, ALONE, CHAIN = "b2b", "alone", "chain"
MODES = (B2B, ALONE, CHAIN)


@dataclasses.dataclass(frozen=True)
class Impl:
    """One implementation a bench times: a dispatcher tier (named as the tier), the dispatcher
    itself, or a peer."""

    name: str
    description: str
    pdl: bool = False  # launched with PDL, as the product runs it
    pdl_off: bool = False  # can also launch without PDL (mode alone)
    peer: bool = False  # another project's code: its failure is recorded, not counted against the run

    def __post_init__(self):
        if self.pdl_off and not self.pdl:
            raise ValueError(f"impl {self.name!r}: pdl_off needs pdl")

    def modes(self, wanted) -> tuple[str, ...]:
        """The modes of ``wanted`` this implementation is timed in, in order: without PDL, b2b
        and alone are one timing (alone); alone needs PDL that switches off."""
        out = []
        for mode in wanted:
            if not self.pdl and mode == B2B:
                mode = ALONE
            elif mode == ALONE and self.pdl and not self.pdl_off:
                continue
            if mode not in out:
                out.append(mode)
        return tuple(out)

    def launches_with_pdl(self, mode: str) -> bool:
        return self.pdl and mode != ALONE

    def natural_mode(self) -> str:
        """The back-to-back mode the product's launch corresponds to (the tuning table's)."""
        return B2B if self.pdl else ALONE


@dataclasses.dataclass(frozen=True)
class Case:
    """One implementation at one point, as ``cute_kernels.timing.time_per_call`` takes it."""

    make: Callable  # a fresh input set: a tuple of tensors laid out as the bench's ``inputs``
    call: Callable  # call(*inputs) launches the op on the current stream
    poison: Callable | None = None  # poison(inputs) overwrites the outputs before the timed replays
    check: Callable | None = None  # check(inputs) raises when the outputs are wrong
    tier: str | None = None  # for the dispatcher: the tier it runs at this point


def always_available(impl: str, point: dict) -> None:
    return None


def unchanged(row: dict) -> dict:
    return row


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bench:
    """An op's benchmark: its points, implementations and how to time each (``case``).

    ``points(presets, shapes, sizes, quick)`` -> the points (dicts of ``point_fields``);
    ``series(point)`` names a point's panel; ``tuning_key(point)`` -> (dtypes, shape), the
    dispatcher's tuning key; ``bytes_per_call(point)`` -> bytes the op must move once;
    ``case(impl, pdl, point)`` -> a ``Case``; ``unavailable(impl, point)`` -> why ``impl``
    cannot run there, or None; ``extra_meta(points, replays)`` -> more meta after the rows;
    ``normalise(row)`` renames rows of earlier benchmarks. Results go to ``<op>.json``."""

    op: str  # the dispatched op's name; also the results files' stem
    size: str  # the swept field: "M" (rows) or "T" (tokens)
    point_fields: tuple[str, ...]
    impls: tuple[Impl, ...]  # in the order tables and legends show them
    baselines: tuple[str, ...]  # speedups are over the first of these measured at a point
    inputs: tuple[str, ...]  # names of the leading tensors of every case's input set
    main_input: str  # the tensor the chain's producer writes (the op's activation input)
    modes: tuple[str, ...]  # timed by default
    points: Callable
    series: Callable
    tuning_key: Callable
    bytes_per_call: Callable
    case: Callable
    unavailable: Callable = always_available
    extra_meta: Callable | None = None
    normalise: Callable = unchanged

    def __post_init__(self):
        names = [i.name for i in self.impls]
        problems = []
        if self.size not in self.point_fields:
            problems.append(f"size {self.size!r} is not a point field")
        if len(set(names)) != len(names):
            problems.append(f"implementation names repeat: {names}")
        if not self.baselines or set(self.baselines) - set(names):
            problems.append(f"baselines {self.baselines} must be implementations")
        if self.main_input not in self.inputs:
            problems.append(f"main input {self.main_input!r} is not one of the inputs {self.inputs}")
        if not self.modes or set(self.modes) - set(MODES):
            problems.append(f"modes {self.modes} must be among {MODES}")
        for field in ("points", "series", "tuning_key", "bytes_per_call", "case", "unavailable", "normalise"):
            if not callable(getattr(self, field)):
                problems.append(f"{field} is not callable")
        if self.extra_meta is not None and not callable(self.extra_meta):
            problems.append("extra_meta is not callable")
        if problems:
            raise ValueError(f"bench {self.op}: " + "; ".join(problems))

    @property
    def file(self) -> str:
        return f"{self.op}.json"

    @property
    def main_index(self) -> int:
        return self.inputs.index(self.main_input)

    def impl(self, name: str) -> Impl:
        for i in self.impls:
            if i.name == name:
                return i
        raise KeyError(f"{self.op} has no implementation {name!r}; it has {', '.join(self.impl_names())}")

    def impl_names(self) -> list[str]:
        return [i.name for i in self.impls]


def rename_impls(names: dict) -> Callable:
    """A ``normalise`` for rows of earlier benchmarks that named implementations differently."""
    def normalise(row: dict) -> dict:
        return {**row, "impl": names.get(row["impl"], row["impl"])}
    return normalise
