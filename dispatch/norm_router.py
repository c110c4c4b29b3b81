"""RMSNorm + router GEMM tiers: ``(normed_x, logits)`` as ``cute_kernels.reference.rmsnorm_router_gemm``.

Tiers, in order: ``cute-fused`` (``cute_kernels.norm_router_gemm``, one kernel), ``unfused``
(RMSNorm in fp32 here, then the router GEMM dispatch on the fp32 result, which keeps the logits
free of the rounding of normed_x as the spec requires), ``torch`` (both halves in fp32 torch).

The problem (``NormRouterProblem``): ``device``, ``x_dtype``, ``norm_dtype``, ``gate_dtype``,
``out_dtype``, ``hidden`` (H), ``gate_shape`` ([E, H]), ``dense`` (every tensor contiguous and
16-byte aligned), ``same_device`` (every tensor on x's device) and
``norm_ok`` (norm_weight of length H, eps >= 0); no plan is ever built without the last two, so a
call that breaks them is checked (and refused) every time. ``arch`` is the device's arch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import environment, router, tiers
from .torch_math import (check_devices, check_out, check_tensor, dense, dtype_name, finish, linear_fp32, require,
                         rms_norm_fp32, same_device)

X_DTYPES = (torch.bfloat16, torch.float16)
NORM_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)
GATE_DTYPES = router.WEIGHT_DTYPES
FUSED_NORM_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
FUSED_MAX_HIDDEN = 131072  # the fused kernel keeps its x tiles in shared memory; this much always fits


class NormRouterProblem(NamedTuple):
    device: torch.device
    x_dtype: torch.dtype
    norm_dtype: torch.dtype
    gate_dtype: torch.dtype
    out_dtype: torch.dtype
    hidden: int
    gate_shape: torch.Size
    dense: bool
    same_device: bool = True
    norm_ok: bool = True

    @property
    def arch(self) -> str | None:
        return environment.device_arch(self.device)

    @property
    def tuning_key(self):
        return (dtype_name(self.x_dtype), dtype_name(self.gate_dtype)), (self.hidden, self.gate_shape[0])

    def describe(self, m: int | None) -> str:
        return (f"x {dtype_name(self.x_dtype)} [{'M' if m is None else m}, {self.hidden}], norm_weight "
                f"{dtype_name(self.norm_dtype)}, gate_weight {dtype_name(self.gate_dtype)} {list(self.gate_shape)}"
                f" -> {dtype_name(self.out_dtype)}{'' if self.dense else ' (not dense and 16-byte aligned)'}"
                f" on {self.device} ({self.arch or 'no GPU arch'})")


def problem_key(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out):
    m, hidden = x.shape
    device = x.device
    is_dense = (dense(x) and dense(norm_weight) and dense(gate_weight)
                and (normed_out is None or dense(normed_out)) and (logits_out is None or dense(logits_out)))
    key = (device, x.dtype, norm_weight.dtype, gate_weight.dtype, out_dtype, hidden, gate_weight.shape, is_dense,
           same_device(device, norm_weight, gate_weight, normed_out, logits_out),
           norm_weight.shape == (hidden,) and float(eps) >= 0.0)
    return key, m


def check_args(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out) -> None:
    check_tensor("x", x, 2, X_DTYPES)
    require(x.shape[1] > 0, "x must have a hidden size > 0")
    check_tensor("norm_weight", norm_weight, 1, NORM_DTYPES)
    require(norm_weight.shape[0] == x.shape[1],
            f"norm_weight has length {norm_weight.shape[0]}, not x's hidden size {x.shape[1]}")
    check_tensor("gate_weight", gate_weight, 2, GATE_DTYPES)
    require(gate_weight.shape[1] == x.shape[1],
            f"gate_weight has shape {tuple(gate_weight.shape)}, which does not match x's hidden size {x.shape[1]}")
    require(float(eps) >= 0.0, f"eps must be >= 0; got {eps}")
    if out_dtype not in router.OUT_DTYPES:
        raise TypeError(f"out_dtype must be float32 or bfloat16; got {out_dtype}")
    if normed_out is not None:
        check_tensor("normed_out", normed_out, 2, (x.dtype,))
    if logits_out is not None:
        check_tensor("logits_out", logits_out, 2, (out_dtype,))
    check_devices("x", x, norm_weight=norm_weight, gate_weight=gate_weight, normed_out=normed_out,
                  logits_out=logits_out)


def run(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out):
    """The eager path: cached plan, integer compare on M, the tier."""
    args = (x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out)
    try:
        key, m = problem_key(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out)
    except (AttributeError, TypeError, ValueError):
        check_args(*args)
        raise
    return NORM_ROUTER.run(key, m, args, check_args, NormRouterProblem)


def problem_of(x, norm_weight, gate_weight, eps=1e-6, *, out_dtype=torch.float32, normed_out=None,
               logits_out=None):
    check_args(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out)
    key, m = problem_key(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out)
    return NormRouterProblem(*key), m


# -- eligibility ---------------------------------------------------------------------------------
def _fused_eligible(p: NormRouterProblem) -> str | None:
    if p.gate_dtype not in (torch.bfloat16, torch.float32):
        return f"needs a bfloat16 or float32 gate_weight; got {dtype_name(p.gate_dtype)}"
    if p.norm_dtype not in FUSED_NORM_DTYPES:
        return f"needs a bfloat16, float16 or float32 norm_weight; got {dtype_name(p.norm_dtype)}"
    if p.hidden > FUSED_MAX_HIDDEN:
        return f"H={p.hidden} is over {FUSED_MAX_HIDDEN}: a CTA's share of x would not fit in shared memory"
    return (router.kernel_limits(_router_problem(p))
            or environment.cute_unavailable(p.device, "norm_router_gemm"))


def _router_problem(p: NormRouterProblem) -> router.RouterProblem:
    """The router GEMM the unfused tier runs: fp32 normed rows times the gate."""
    return router.RouterProblem(p.device, torch.float32, p.gate_dtype, None, p.out_dtype, p.hidden,
                                p.gate_shape, p.dense)


def _unfused_eligible(p: NormRouterProblem) -> str | None:
    """Worth it only when the router GEMM has a tier faster than plain torch for fp32 rows."""
    rp = _router_problem(p)
    reasons = []
    for t in router.ROUTER.tiers:
        if t.name != "torch":
            why = t.eligible(rp)
            if why is None:
                return None
            reasons.append(f"{t.name}: {why}")
    return f"the router GEMM on fp32 rows would run on torch ({'; '.join(reasons)})"


def _kernel_max_rows(p: NormRouterProblem) -> int:
    return router.MAX_ELEMENTS // max(p.hidden, p.gate_shape[0], 1)


# -- implementations -----------------------------------------------------------------------------
def _bind_fused(p: NormRouterProblem):
    """``cute_kernels.norm_router_gemm``'s launcher, which checks only the outputs."""
    from cute_kernels import ops

    return ops.norm_router_gemm_launcher(p.x_dtype, p.norm_dtype, p.gate_dtype, p.out_dtype, p.hidden,
                                         p.gate_shape[0], p.device, True)


def _unfused(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out):
    if logits_out is not None:  # else the router GEMM would report it as its "out"
        check_out("logits_out", logits_out, (x.shape[0], gate_weight.shape[0]), out_dtype)
    n = rms_norm_fp32(x, norm_weight, eps)
    return (finish(n, x.dtype, normed_out, "normed_out"),
            router.run(n, gate_weight, None, out_dtype, logits_out))


def _torch(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out):
    n = rms_norm_fp32(x, norm_weight, eps)
    return (finish(n, x.dtype, normed_out, "normed_out"),
            finish(linear_fp32(n, gate_weight, None), out_dtype, logits_out, "logits_out"))


NORM_ROUTER = tiers.add_op(tiers.OpTiers("norm_router_gemm", [
    tiers.Tier("cute-fused", _fused_eligible, max_rows=_kernel_max_rows, bind=_bind_fused),
    tiers.Tier("unfused", _unfused_eligible, _unfused),
    tiers.Tier("torch", lambda p: None, _torch),
], problem_of))
