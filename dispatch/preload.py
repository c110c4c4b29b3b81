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

from . import ops, tiers

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


def _preset_calls(preset, device):
    """``(op name, public function, make(M) -> (args, kwargs))`` for every op the preset runs."""
    h, e, k, inter = preset.hidden_size, preset.num_experts, preset.top_k, preset.moe_intermediate_size
    gate_dtype, logits_dtype = getattr(torch, preset.gate_dtype), getattr(torch, preset.logits_dtype)
    weight = torch.randn(e, h, device=device).to(gate_dtype)
    bias = torch.randn(e, device=device).to(gate_dtype) if preset.gate_bias else None
    norm_weight = torch.ones(h, dtype=torch.bfloat16, device=device)

    def rows(m, width, dtype=torch.bfloat16):
        return torch.randn(m, width, device=device).to(dtype)

    calls = [("router_gemm", ops.router_gemm, lambda m: ((rows(m, h), weight, bias), {"out_dtype": logits_dtype}))]
    if preset.norm_router:
        calls.append(("norm_router_gemm", ops.norm_router_gemm,
                      lambda m: ((rows(m, h), norm_weight, weight), {"out_dtype": logits_dtype})))
    group = 128 if inter % 128 == 0 else 64
    calls.append(("silu_mul_quant_fp8", ops.silu_mul_quant_fp8, lambda m: ((rows(m, 2 * inter), group), {})))
    for ids_dtype in (torch.int32, torch.int64):  # torch.topk gives int64 ids; kernels often int32
        for weights_dtype in (torch.float32, torch.bfloat16):
            calls.append(("pack_topk", ops.pack_topk, lambda m, i=ids_dtype, w=weights_dtype: (
                (torch.randint(0, e, (m, k), dtype=i, device=device), rows(m, k, w)), {})))
    return calls


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
        for op, fn, make in _preset_calls(preset, device):
            op_tiers = tiers.op_tiers(op)
            args, kwargs = make(1)
            problem, _ = op_tiers.problem_of(*args, **kwargs)
            ms = m_values if m_values is not None else [
                max(lo, 1) for lo, _, _ in op_tiers.segments(problem) if lo <= LARGEST_DEFAULT_M]
            for m in ms:
                args, kwargs = make(m)
                fn(*args, **kwargs)
                summary.calls.append((preset.name, op, m, op_tiers.explain(problem, m).tier))
    torch.cuda.synchronize(device)
    summary.seconds = time.perf_counter() - start
    return summary
