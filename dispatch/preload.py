"""Load every kernel a deployment will run before CUDA-graph capture.

A capture must not compile or load a kernel (``cute_kernels`` raises RuntimeError if it would),
and cuBLAS sets up its workspace on first use. ``warmup`` runs each dispatched op once per tier
it can pick for a preset's shapes, on small real tensors, so everything is loaded beforehand.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from cute_kernels import presets as _presets

from . import tiers

LARGEST_DEFAULT_M = 16384  # tiers that only take over above this (row limits) are not warmed by default


@dataclasses.dataclass
class WarmupSummary:
    """What ran: ``calls`` holds ``(preset, op, M, tier)``."""

    device: str | None
    calls: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.device is None:
            return "dispatch.warmup: no CUDA device, nothing to warm (every op runs its torch tier)"
        lines = [f"dispatch.warmup on {self.device}: {len(self.calls)} calls in {self.seconds:.2f} s"]
        lines += [f"  {preset:<20} {op:<20} M={m:<6} {tier}" for preset, op, m, tier in self.calls]
        return "\n".join(lines)


def _cuda_device(device) -> torch.device | None:
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def warmup(presets, m_values=None, device=None) -> WarmupSummary:
    """Runs every op of each preset (a name or a ``cute_kernels.presets.Preset``) on ``device``.

    ``m_values``: the batch sizes that will be captured; by default one M per tier each op can
    pick for the preset's shapes up to M = 16384 (the compiled kernels serve every M). Returns
    a summary; without a CUDA device there is nothing to warm and the summary says so."""
    device = _cuda_device(device)
    if device is None:
        return WarmupSummary(None)
    summary, start = WarmupSummary(str(device)), time.perf_counter()
    for preset in presets:
        preset = _presets.get(preset) if isinstance(preset, str) else preset
        for op in tiers.OPS.values():
            for make in op.examples(preset, device):
                problem, _ = op.problem_of(*make(1))
                ms = m_values if m_values is not None else [
                    max(lo, 1) for lo, _, _ in op.segments(problem) if lo <= LARGEST_DEFAULT_M]
                for m in ms:
                    op.run(*make(m))
                    summary.calls.append((preset.name, op.name, m, op.explain(problem, m).tier))
    torch.cuda.synchronize(device)
    summary.seconds = time.perf_counter() - start
    return summary
