"""The speed targets, in one place: cold us per call inside a CUDA graph on the H100, PDL on,
back to back (mode b2b) unless a target names another mode.

- router_gemm and norm_router_gemm: the product's targets, set below the
  best specialised peers measured on the H100 (docs/benchmarking.md);
- silu_mul_quant_fp8 and pack_topk: the targets of perf/NOTES.md.

A target holds for a set of points (``where``: a point field -> one value or a tuple of values);
at each point the fastest of ``impls`` (timed in ``mode``) counts, and the target is met when the
slowest of those points is at or under ``us``.
"""

from __future__ import annotations

import dataclasses

from perf.bench import B2B

PRODUCT = "product targets (perf/targets.py)"
NOTES = "perf/NOTES.md"


@dataclasses.dataclass(frozen=True)
class Target:
    op: str
    where: dict
    impls: tuple
    us: float
    source: str
    mode: str = B2B

    def matches(self, row) -> bool:
        return row["op"] == self.op and row["mode"] == self.mode and all(
            row.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in self.where.items())

    def describe(self) -> str:
        return ", ".join(f"{k}={'/'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in self.where.items())


# preset -> {M: us}
ROUTER_TARGET_US = {
    "deepseek-v3": {1: 2.4, 4: 2.6, 16: 3.0, 64: 3.5, 128: 4.0},
    "kimi-k2": {1: 3.1, 16: 3.8, 128: 5.0},
    "gpt-oss-120b": {1: 1.8, 128: 2.6},
    "minimax-m2": {1: 2.2, 32: 3.5},
    "qwen3-235b-a22b": {1: 1.6},
}
NORM_ROUTER_TARGET_US = {"deepseek-v4-pro": {1: 3.3, 4: 3.5, 16: 4.0}}

TARGETS = (
    [Target("router_gemm", {"preset": p, "M": m}, ("cute-dot", "cute-mma"), us, PRODUCT)
     for p, by_m in ROUTER_TARGET_US.items() for m, us in by_m.items()]
    + [Target("norm_router_gemm", {"preset": p, "M": m}, ("cute-fused",), us, PRODUCT)
       for p, by_m in NORM_ROUTER_TARGET_US.items() for m, us in by_m.items()]
    + [Target("silu_mul_quant_fp8", {"H": 2048, "group_size": 128, "scale_layout": "row", "T": t}, ("cute",), us,
              NOTES) for t, us in ((16, 2.0), (4096, 16.0), (32768, 125.0))]
    + [Target("pack_topk", {"k": 8, "T": t}, ("cute",), us, f"{NOTES}, every dtype pair")
       for t, us in (((1, 4, 16, 64, 256, 1024), 1.5), (16384, 2.0))]
)


def evaluate(op: str, rows, point_key) -> list[dict]:
    """One line per target of ``op``: the measured value (the slowest matching point, where
    the fastest of the target's implementations in its mode counts) and whether it is met.
    ``point_key(row)`` names a row's point (rows of one point share it)."""
    lines = []
    for t in (t for t in TARGETS if t.op == op):
        best = {}  # point -> (us, row)
        for r in rows:
            if t.matches(r) and r["impl"] in t.impls and r.get("cold_us") is not None:
                k = point_key(r)
                if k not in best or r["cold_us"] < best[k][0]:
                    best[k] = (r["cold_us"], r)
        worst = max(best.values(), key=lambda v: v[0], default=None)
        lines.append({"target": t.describe(), "mode": t.mode, "bar_us": t.us, "source": t.source,
                      "measured_us": None if worst is None else worst[0],
                      "worst_at": None if worst is None else _where(worst[1], t),
                      "met": None if worst is None else worst[0] <= t.us})
    return lines


def _where(row, target) -> str:
    """The implementation, and the fields that tell the slowest point apart from the target's others."""
    fields = [k for k, v in target.where.items() if isinstance(v, tuple)]
    fields += [k for k in ("ids_dtype", "weights_dtype") if k in row]
    return " ".join([row["impl"]] + [f"{k}={row[k]}" for k in fields])
