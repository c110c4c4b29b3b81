"""RMSNorm + router GEMM: ``(normed_x, logits)`` as ``cute_kernels.reference.norm_router_gemm``.

Tiers, in order: ``cute-fused`` (``cute_kernels.norm_router_gemm``, one kernel), ``unfused``
(RMSNorm in fp32 here, then the router GEMM dispatch on the fp32 result, which keeps the logits
free of the rounding of normed_x as the spec requires), ``torch`` (both halves in fp32 torch).

The problem (``NormRouterProblem``): ``device``, ``x_dtype``, ``norm_dtype``, ``gate_dtype``,
``out_dtype``, ``hidden`` (H), ``gate_shape`` ([E, H]), ``dense`` (every tensor contiguous and
16-byte aligned), ``same_device`` (every tensor on x's device), ``norm_ok`` (norm_weight of
length H, eps >= 0) and ``needs_grad``; no plan is ever built without ``same_device`` and
``norm_ok``, so a call that breaks them is checked (and refused) every time.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cute_kernels import ops as kernel_ops
from cute_kernels.checks import check_tensor, dtype_name, require
from cute_kernels.kernels import router_gemm as family

from .. import environment, tiers
from ..torch_math import check_devices, check_out, dense, finish, linear_fp32, rms_norm_fp32, same_device
from . import router_gemm

X_DTYPES = (torch.bfloat16, torch.float16)
NORM_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)
GATE_DTYPES = router_gemm.WEIGHT_DTYPES


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
    needs_grad: bool = False

    @property
    def tuning_key(self):
        return (dtype_name(self.x_dtype), dtype_name(self.gate_dtype)), (self.hidden, self.gate_shape[0])

    def kernel_problem(self) -> family.NormProblem:
        return family.NormProblem(*(dtype_name(d) for d in (self.x_dtype, self.norm_dtype, self.gate_dtype,
                                                            self.out_dtype)), self.hidden, self.gate_shape[0])

    def router_problem(self) -> router_gemm.RouterProblem:
        """The router GEMM the unfused tier runs: fp32 normed rows times the gate."""
        return router_gemm.RouterProblem(self.device, torch.float32, self.gate_dtype, None, self.out_dtype,
                                         self.hidden, self.gate_shape, self.dense)

    def describe(self, m: int | None) -> str:
        return (f"x {dtype_name(self.x_dtype)} [{'M' if m is None else m}, {self.hidden}], norm_weight "
                f"{dtype_name(self.norm_dtype)}, gate_weight {dtype_name(self.gate_dtype)} {list(self.gate_shape)}"
                f" -> {dtype_name(self.out_dtype)}{'' if self.dense else ' (not dense and 16-byte aligned)'}"
                f" on {self.device} ({tiers.problem_arch(self) or 'no GPU arch'})")


def problem_key(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out):
    m, hidden = x.shape
    device = x.device
    is_dense = (dense(x) and dense(norm_weight) and dense(gate_weight)
                and (normed_out is None or dense(normed_out)) and (logits_out is None or dense(logits_out)))
    key = (device, x.dtype, norm_weight.dtype, gate_weight.dtype, out_dtype, hidden, gate_weight.shape, is_dense,
           same_device(device, norm_weight, gate_weight, normed_out, logits_out),
           norm_weight.shape == (hidden,) and float(eps) >= 0.0, tiers.needs_grad(x, norm_weight, gate_weight))
    return key, m


def check_args(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out) -> None:
    check_tensor("x", x, X_DTYPES, (None, None))
    require(x.shape[1] > 0, "x must have a hidden size > 0")
    check_tensor("norm_weight", norm_weight, NORM_DTYPES, (None,))
    require(norm_weight.shape[0] == x.shape[1],
            f"norm_weight has length {norm_weight.shape[0]}, not x's hidden size {x.shape[1]}")
    check_tensor("gate_weight", gate_weight, GATE_DTYPES, (None, None))
    require(gate_weight.shape[1] == x.shape[1],
            f"gate_weight has shape {tuple(gate_weight.shape)}, which does not match x's hidden size {x.shape[1]}")
    require(float(eps) >= 0.0, f"eps must be >= 0; got {eps}")
    require(out_dtype in router_gemm.OUT_DTYPES, f"out_dtype must be float32 or bfloat16; got {out_dtype}", TypeError)
    if normed_out is not None:
        check_tensor("normed_out", normed_out, (x.dtype,), (None, None))
    if logits_out is not None:
        check_tensor("logits_out", logits_out, (out_dtype,), (None, None))
    check_devices("x", x, norm_weight=norm_weight, gate_weight=gate_weight, normed_out=normed_out,
                  logits_out=logits_out)


def _fake(x, norm_weight, gate_weight, eps, out_dtype):
    check_args(x, norm_weight, gate_weight, eps, out_dtype, None, None)
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(
        (x.shape[0], gate_weight.shape[0]), dtype=out_dtype)


def _examples(preset, device):
    if not preset.norm_router:
        return []
    gate = torch.randn(preset.num_experts, preset.hidden_size, device=device).to(getattr(torch, preset.gate_dtype))
    norm_weight = torch.ones(preset.hidden_size, dtype=torch.bfloat16, device=device)
    out_dtype = getattr(torch, preset.logits_dtype)
    return [lambda m: (torch.randn(m, preset.hidden_size, device=device).to(torch.bfloat16), norm_weight, gate,
                       1e-6, out_dtype, None, None)]


# -- tiers ---------------------------------------------------------------------------------------
def _fused_eligible(p: NormRouterProblem) -> str | None:
    if why := family.supports_norm(p.kernel_problem()):
        return why
    if not p.dense:
        return "x, norm_weight, gate_weight and the outputs must be contiguous and 16-byte aligned"
    return environment.cute_unavailable(p.device)


def _unfused_eligible(p: NormRouterProblem) -> str | None:
    """Worth it only when the router GEMM has a tier faster than plain torch for fp32 rows."""
    rp = p.router_problem()
    reasons = []
    for t in router_gemm.OP.tiers:
        if t.name != "torch":
            why = t.eligible(rp)
            if why is None:
                return None
            reasons.append(f"{t.name}: {why}")
    return f"the router GEMM on fp32 rows would run on torch ({'; '.join(reasons)})"


def _kernel_max_rows(p: NormRouterProblem) -> int:
    return family.max_rows(p.hidden, p.gate_shape[0])


def _bind_fused(p: NormRouterProblem):
    """``cute_kernels.norm_router_gemm``'s launcher, which checks only the outputs."""
    return kernel_ops.norm_router_gemm_launcher(p.x_dtype, p.norm_dtype, p.gate_dtype, p.out_dtype, p.hidden,
                                                p.gate_shape[0], p.device, True)


def _unfused(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out):
    if logits_out is not None:  # else the router GEMM would report it as its "out"
        check_out("logits_out", logits_out, (x.shape[0], gate_weight.shape[0]), out_dtype)
    n = rms_norm_fp32(x, norm_weight, eps)
    return (finish(n, x.dtype, normed_out, "normed_out"),
            router_gemm.OP.run(n, gate_weight, None, out_dtype, logits_out))


def _torch(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out):
    n = rms_norm_fp32(x, norm_weight, eps)
    return (finish(n, x.dtype, normed_out, "normed_out"),
            finish(linear_fp32(n, gate_weight, None), out_dtype, logits_out, "logits_out"))


OP = tiers.add_op(tiers.Op("norm_router_gemm", [
    tiers.Tier("cute-fused", _fused_eligible, max_rows=_kernel_max_rows, bind=_bind_fused),
    tiers.Tier("unfused", _unfused_eligible, _unfused),
    tiers.Tier("torch", lambda p: None, _torch),
], params=("x", "norm_weight", "gate_weight", tiers.Param("eps", 1e-6), tiers.Param("out_dtype", torch.float32),
           tiers.Param("normed_out", None), tiers.Param("logits_out", None)),
    outputs=("normed_out", "logits_out"),
    schema="(Tensor x, Tensor norm_weight, Tensor gate_weight, float eps, ScalarType out_dtype) -> (Tensor, Tensor)",
    problem=NormRouterProblem, key=problem_key, check=check_args, fake=_fake, examples=_examples))

_is_compiling = torch.compiler.is_compiling


def norm_router_gemm(x: torch.Tensor, norm_weight: torch.Tensor, gate_weight: torch.Tensor,
                     eps: float = 1e-6, *, out_dtype: torch.dtype = torch.float32,
                     normed_out: torch.Tensor | None = None, logits_out: torch.Tensor | None = None):
    """RMSNorm then the router GEMM: ``(normed_x, logits)``.

    x [M, H] bf16/fp16, norm_weight [H], gate_weight [E, H] bf16/fp16/fp32. The logits use the
    unrounded normed rows. Semantics: ``cute_kernels.reference.norm_router_gemm``."""
    if _is_compiling():
        return OP.compiled(x, norm_weight, gate_weight, float(eps), out_dtype, normed_out, logits_out)
    return OP.run(x, norm_weight, gate_weight, eps, out_dtype, normed_out, logits_out)
