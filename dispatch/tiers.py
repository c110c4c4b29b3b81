"""The dispatched-op template: ordered tiers, cached per-problem plans, forcing, explaining,
logging, the eager path and the torch.compile path. An op module (``dispatch/ops/<op>.py``)
declares only what is its own: its parameters and outputs, its argument checks, its problem (a
NamedTuple: everything about a call except M) and the hot-path key that builds it, and its
ordered tiers; ``Op`` does the rest.

A problem's *plan* is a tuple of ``(lo, hi, call, tier name)`` rows: the first row with
``lo <= M <= hi`` runs, as ``call(M, *args)``. Plans are built once per problem (eligibility,
tuning windows, forcing, warnings, logging, and each tier's implementation bound to the problem)
and are all the per-call path ever reads.

The ops are inference ops: a call with an input that requires grad while grad mode is on raises
RuntimeError on every tier and path (eager and compiled), since no tier records a backward.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import warnings
from typing import Callable, NamedTuple

import torch

from . import environment, tuning
from .environment import Unavailable
from .torch_math import finish

FORCE_ENV = "CUTE_KERNELS_FORCE_TIER"
LOG_ENV = "CUTE_KERNELS_LOG_DISPATCH"
NO_LIMIT = tuning.NO_LIMIT

logger = logging.getLogger("cute_kernels.dispatch")


@dataclasses.dataclass(frozen=True)
class Tier:
    """One implementation of an op.

    ``eligible(problem)`` returns None when the tier can run the problem, else a one-line
    reason; it never sees M (plans are cached per problem). ``impl`` takes the op's positional
    arguments (see ``register_tier``). Instead of ``impl`` a tier may give ``bind``:
    ``bind(problem)`` returns the implementation for that one problem, called as
    ``(M, *args)``, so it need not check again what the problem holds (the CuTe tiers launch
    through it). ``max_rows(problem)``, if given, is the largest M the implementation takes
    (32-bit indexing limits)."""

    name: str
    eligible: Callable
    impl: Callable | None = None
    max_rows: Callable | None = None
    bind: Callable | None = None

    def __post_init__(self):
        if (self.impl is None) == (self.bind is None):
            raise ValueError(f"tier {self.name!r}: give impl or bind")

    def runner(self, problem) -> Callable:
        """What a plan calls for ``problem``: ``(M, *args)`` -> the op's result."""
        if self.bind is not None:
            return self.bind(problem)
        impl = self.impl
        return lambda m, *args: impl(*args)


@dataclasses.dataclass(frozen=True)
class Verdict:
    tier: Tier
    reason: str | None  # why it cannot run this problem; None when it can
    window: tuple[int, int]  # M range from the tuning table
    max_rows: int

    @property
    def rows(self) -> tuple[int, int]:
        return self.window[0], min(self.window[1], self.max_rows)


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Which tier a call would run and why each tier before it was passed over.

    ``steps`` holds ``(tier, verdict)`` for every tier in order; ``str()`` renders it."""

    op: str
    m: int
    call: str
    tier: str
    steps: tuple[tuple[str, str], ...]
    tuning_source: str
    forced: str | None

    def __str__(self) -> str:
        lines = [f"{self.op}: {self.call}", f"  runs tier {self.tier!r}"
                 + (f" (forced by {self.forced})" if self.forced else f" (tuning: {self.tuning_source})")]
        lines += [f"  {'*' if name == self.tier else '-'} {name}: {verdict}" for name, verdict in self.steps]
        return "\n".join(lines)


class Param(NamedTuple):
    """One positional parameter of a dispatched op: its name and its default (``REQUIRED``:
    none). Parameters after the first ones with defaults are keyword-only in the public call."""

    name: str
    default: object = inspect.Parameter.empty


REQUIRED = inspect.Parameter.empty


class Op:
    """A dispatched op: its tiers in order of preference, its plans, and both call paths.

    - ``params``: the positional parameters every tier's implementation takes, in order;
    - ``outputs``: those that are optional output tensors (allocated when None), in the order
      the op returns its results;
    - ``schema``: the torch custom op's schema over the other parameters (torch.compile);
    - ``problem``: the NamedTuple of a call without M (fields ``device`` first; a ``tuning_key``
      property and a ``describe(m)`` method);
    - ``key(*args) -> (key tuple, M)``: the hot path's plain-tuple form of ``problem`` (it hashes
      like it), whose last field says whether the call needs a backward;
    - ``check(*args)``: raises TypeError / ValueError naming a bad argument; run only when a new
      problem's plan is built, so a key holds every fact it checks that the tiers do not;
    - ``fake(*inputs)``: the custom op's outputs for torch.compile's tracing (shapes, dtypes,
      strides), after checking the arguments as a call would;
    - ``examples(preset, device)``: ``make(M) -> args`` for each call a preset makes (warmup);
    - ``traced``: for an op whose results are not simply its output parameters, ``(impl,
      compiled)``: the custom op's implementation over the schema's arguments, and the compiled
      path over the op's parameters (in place of ``Op.compiled``'s)."""

    def __init__(self, name: str, tiers: list[Tier], *, params: tuple, outputs: tuple, schema: str,
                 problem: type, key: Callable, check: Callable, fake: Callable, examples: Callable,
                 traced: tuple | None = None):
        self.name = name
        self.tiers = tiers
        self.params = tuple(p if isinstance(p, Param) else Param(p) for p in params)
        self.outputs = outputs
        self.problem_type = problem
        self.key = key
        self.check = check
        self.fake = fake
        self.examples = examples
        names = [p.name for p in self.params]
        self._output_at = [names.index(o) for o in outputs]
        self._input_at = [i for i, n in enumerate(names) if n not in outputs]
        self.schema = schema
        self.traced = traced
        self.plans: dict = {}
        self.missing: dict = {}  # (problem, tier name) -> why: the tier found no compiled kernel
        self.custom_op = None  # set by dispatch.library

    def tier(self, name: str) -> Tier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise ValueError(f"{self.name} has no tier {name!r}; its tiers: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def signature(self) -> str:
        """The positional form every tier's implementation takes, e.g. ``(x, weight, bias, ...)``."""
        return "(" + ", ".join(p.name for p in self.params) + ")"

    # -- the two call paths -----------------------------------------------------------------
    def run(self, *args):
        """The eager path: the cached plan for the call's key, an integer compare on M, the tier."""
        try:
            key, m = self.key(*args)
        except (AttributeError, TypeError, ValueError):
            self.check(*args)
            raise
        plan = self.plans.get(key)
        if plan is None:
            self.check(*args)
            plan = self.plan(self.problem_type(*key))
        for lo, hi, call, name in plan:
            if lo <= m <= hi:
                try:
                    return call(m, *args)
                except environment.MISSING_KERNEL_ERRORS as e:
                    self.kernel_missing(key, name, e)
                    return self.run(*args)
        raise self.no_tier(m)

    def compiled(self, *args):
        """The torch.compile path: the custom op (opaque to the compiler, so the tier is chosen
        when the graph runs, for its M) on the inputs, its results copied into any given
        outputs (the compiler owns the memory plan: that costs one copy)."""
        if torch.is_grad_enabled() and any(isinstance(args[i], torch.Tensor) and args[i].requires_grad
                                           for i in self._input_at):
            raise self.needs_grad_error()
        if self.traced is not None:
            return self.traced[1](*args)
        results = self.custom_op(*(args[i] for i in self._input_at))
        if len(self.outputs) == 1:
            results = (results,)
        results = tuple(value if args[i] is None else finish(value, value.dtype, args[i], name)
                        for value, i, name in zip(results, self._output_at, self.outputs))
        return results[0] if len(results) == 1 else results

    def bind(self, args: tuple, kwargs: dict) -> tuple:
        """The positional arguments of a public call's ``(*args, **kwargs)``."""
        bound = inspect.Signature([inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default)
                                   for p in self.params]).bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments.values())

    def problem_of(self, *args, **kwargs):
        """``(problem, M)`` of a public call, after checking its arguments."""
        args = self.bind(args, kwargs)
        self.check(*args)
        key, m = self.key(*args)
        return self.problem_type(*key), m

    def needs_grad_error(self) -> RuntimeError:
        return RuntimeError(f"dispatch.{self.name} is an inference op and records no backward, but an input "
                            "requires grad: call it under torch.no_grad() or torch.inference_mode() (or detach the "
                            "inputs)")

    # -- plans ------------------------------------------------------------------------------
    def verdicts(self, problem) -> tuple[list[Verdict], str]:
        windows, source = tuning.windows(self.name, problem_arch(problem), *problem.tuning_key)
        out = []
        for t in self.tiers:
            limit = t.max_rows(problem) if t.max_rows is not None else NO_LIMIT
            reason = self.missing.get((problem, t.name)) or t.eligible(problem)
            out.append(Verdict(t, reason, windows.get(t.name, (0, NO_LIMIT)), limit))
        return out, source

    def decide(self, problem):
        """``(rows, verdicts, tuning source, forced)``; rows are ``(lo, hi, tier)``, first match runs."""
        forced = forced_tier(self.name)
        verdicts, source = self.verdicts(problem)
        if forced is None:
            return _rows(verdicts), verdicts, source, None
        name, by = forced
        v = next((v for v in verdicts if v.tier.name == name), None)
        if v is None:
            self.tier(name)  # raises, listing the tiers
        if v.reason is not None:
            raise ValueError(f"{self.name}: tier {name!r} (forced by {by}) is not eligible: {v.reason}")
        return [(0, v.max_rows, v.tier)], verdicts, source, forced

    def plan(self, problem) -> tuple:
        """Builds, caches and returns the problem's plan (warns and logs here, once)."""
        if problem.needs_grad:
            error = self.needs_grad_error()

            def refuse(m, *args):
                raise error
            plan = self.plans[problem] = ((0, NO_LIMIT, refuse, "(refused: an input requires grad)"),)
            return plan
        rows, verdicts, source, forced = self.decide(problem)
        if forced is None:
            _warn_unavailable(self.name, verdicts, rows[-1][2].name)
        if os.environ.get(LOG_ENV) == "1":
            _log(f"{self.name} {problem.describe(None)}: {_render(rows)}"
                 + (f" (forced by {forced[1]})" if forced else f" (tuning: {source})")
                 + "".join(f"; {v.tier.name} skipped: {v.reason}" for v in verdicts if v.reason))
        plan = tuple((lo, hi, t.runner(problem), t.name) for lo, hi, t in rows)
        self.plans[problem] = plan
        return plan

    def segments(self, problem) -> list[tuple[int, int, str]]:
        """``(lo, hi, tier name)`` per M range for this problem, as the plan decides it."""
        return _segments(self.decide(problem)[0])

    def explain(self, problem, m: int) -> Explanation:
        rows, verdicts, source, forced = self.decide(problem)
        chosen = next((t.name for lo, hi, t in rows if lo <= m <= hi), None)
        if chosen is None:
            raise self.no_tier(m)
        steps, after = [], False
        for v in verdicts:
            name, (lo, hi) = v.tier.name, v.rows
            if forced is not None and name != chosen:
                verdict = "not considered (another tier is forced)"
            elif v.reason is not None:
                verdict = f"{'not eligible' if after else 'skipped'}: {v.reason}"
            elif name == chosen:
                in_window = forced is not None or lo <= m <= hi
                verdict = "runs" if in_window else "runs: no tuning window claims M, so the last eligible tier does"
                after = True
            elif after:
                verdict = "eligible, not needed"
            elif m > v.max_rows:
                verdict = f"skipped: M={m} is over its limit of {v.max_rows} rows"
            elif v.window == tuning.NEVER:
                verdict = "skipped: the tuning table never runs it for this problem"
            else:
                verdict = f"skipped: the tuning table gives it M in {_span(*v.window)}"
            steps.append((name, verdict))
        return Explanation(self.name, m, problem.describe(m), chosen, tuple(steps), source,
                           forced[1] if forced else None)

    def kernel_missing(self, problem, name: str, error: Exception) -> None:
        """A CuTe tier had no compiled kernel (no DSL to build it, none ahead of time): the
        problem's plan is rebuilt without that tier, which warns once."""
        self.missing[(problem, name)] = Unavailable(f"no compiled kernel and no CuTe DSL to build one ({error})")
        self.plans.pop(problem, None)

    def no_tier(self, m: int) -> ValueError:
        """The error for an M that no row of the plan takes (over every row limit)."""
        forced = forced_tier(self.name)
        if forced is not None:
            return ValueError(f"{self.name}: tier {forced[0]!r} (forced by {forced[1]}) cannot take M={m}: "
                              "over its row limit")
        return ValueError(f"{self.name}: no eligible tier can take M={m}")


def problem_arch(problem) -> str | None:
    """The arch of the problem's device (None: not a CUDA GPU), as the decisions see it."""
    return environment.device_arch(problem.device)


def needs_grad(*tensors) -> bool:
    """The key field every op ends with: grad mode is on and an input (None: absent) requires grad."""
    if not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


def _rows(verdicts: list[Verdict]) -> list[tuple[int, int, Tier]]:
    eligible = [v for v in verdicts if v.reason is None]
    if not eligible:
        raise RuntimeError("no tier is eligible: the last tier of every op must always be eligible")
    last = eligible[-1]
    return [(*v.rows, v.tier) for v in eligible] + [(0, last.max_rows, last.tier)]


def _segments(rows) -> list[tuple[int, int, str]]:
    starts = sorted({0} | {lo for lo, _, _ in rows} | {hi + 1 for _, hi, _ in rows if hi < NO_LIMIT})
    segments = []
    for i, start in enumerate(starts):
        end = starts[i + 1] - 1 if i + 1 < len(starts) else NO_LIMIT
        name = next((t.name for lo, hi, t in rows if lo <= start <= hi), "(none: over every tier's limit)")
        if segments and segments[-1][2] == name:
            segments[-1] = (segments[-1][0], end, name)
        else:
            segments.append((start, end, name))
    return segments


def _span(lo: int, hi: int) -> str:
    return f"[{lo}, {'inf' if hi >= NO_LIMIT else hi}]"


def _render(rows) -> str:
    return ", ".join(f"M in {_span(lo, hi)}: {name}" for lo, hi, name in _segments(rows))


_warned: set[str] = set()


def _warn_unavailable(op: str, verdicts: list[Verdict], fallback: str) -> None:
    for v in verdicts:
        if isinstance(v.reason, Unavailable) and v.reason not in _warned:
            _warned.add(v.reason)
            warnings.warn(f"cute_kernels dispatch: {v.reason}; {op} and the other ops fall back to their "
                          f"{fallback!r} tier (same results, slower). dispatch.explain(...) says why per call.",
                          RuntimeWarning, stacklevel=5)


def _log(message: str) -> None:
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        logger.addHandler(logging.StreamHandler())
    logger.info(message)


# -- registry, forcing ------------------------------------------------------------------------
OPS: dict[str, Op] = {}
_forced_in_context: dict[str, str] = {}


def add_op(op: Op) -> Op:
    OPS[op.name] = op
    return op


def op_tiers(op: str) -> Op:
    try:
        return OPS[op]
    except KeyError:
        raise ValueError(f"unknown op {op!r}; dispatched ops: {', '.join(OPS)}") from None


def clear_cache() -> None:
    """Forgets every plan: call it after changing the environment variables or the table."""
    for op in OPS.values():
        op.plans.clear()
        op.missing.clear()


def forced_tier(op: str) -> tuple[str, str] | None:
    """``(tier, what forced it)`` or None. The context manager wins over the environment."""
    if op in _forced_in_context:
        return _forced_in_context[op], "dispatch.force_tier"
    text = os.environ.get(FORCE_ENV, "")
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, tier = (s.strip() for s in item.partition("="))
        if not sep or not tier:
            raise ValueError(f"{FORCE_ENV}={text!r}: expected comma-separated op=tier pairs")
        op_tiers(name).tier(tier)  # unknown op or tier: ValueError naming the valid ones
        if name == op:
            return tier, f"{FORCE_ENV}"
    return None


@contextlib.contextmanager
def force_tier(op: str, tier: str):
    """Within the block, ``op`` runs on ``tier`` (process-wide, for every thread).

    A call the tier cannot run raises ValueError naming the tier and the reason."""
    op_tiers(op).tier(tier)
    previous = _forced_in_context.get(op)
    _forced_in_context[op] = tier
    clear_cache()
    try:
        yield
    finally:
        if previous is None:
            del _forced_in_context[op]
        else:
            _forced_in_context[op] = previous
        clear_cache()


def register_tier(op: str, name: str, eligible: Callable, impl: Callable, *, before: str | None = None,
                  after: str | None = None, max_rows: Callable | None = None) -> None:
    """Adds a tier to ``op`` without editing this package (first in order unless placed).

    ``eligible(problem) -> None | str`` sees the op's problem (a NamedTuple; its fields are in
    the op module's docstring, e.g. ``dispatch.ops.router_gemm``) and never M: decisions are
    cached per problem. ``impl`` takes the op's positional arguments, as
    ``dispatch.op_signature(op)`` lists them (e.g. router_gemm: ``(x, weight, bias, out_dtype,
    out)``), and must return what the op returns, writing into the output tensors when they are
    given. The tuning table may name the tier to give it an M window."""
    ops = op_tiers(op)
    if name in ops.names():
        raise ValueError(f"{op} already has a tier {name!r}")
    if before is not None and after is not None:
        raise ValueError("give at most one of before= and after=")
    if before is not None:
        index = ops.names().index(ops.tier(before).name)
    elif after is not None:
        index = ops.names().index(ops.tier(after).name) + 1
    else:
        index = 0
    ops.tiers.insert(index, Tier(name, eligible, impl, max_rows))
    clear_cache()


def remove_tier(op: str, name: str) -> None:
    """Removes a tier added with ``register_tier``."""
    ops = op_tiers(op)
    ops.tiers.remove(ops.tier(name))
    clear_cache()


def op_signature(op: str) -> str:
    """The positional parameters ``op``'s tier implementations take."""
    return op_tiers(op).signature()


def explain(op: str, *args, **kwargs) -> Explanation:
    """Which tier ``dispatch.<op>(*args, **kwargs)`` would run, and why earlier tiers did not."""
    ops = op_tiers(op)
    problem, m = ops.problem_of(*args, **kwargs)
    return ops.explain(problem, m)
