"""Router GEMM: ``logits = x @ weight.T (+ bias)``, rounded once to ``out_dtype``.

Tiers, in order: ``cute-mma`` (CuTe tensor-core kernel), ``cute-dot`` (CuTe dot-product
kernel), ``cublas`` (``torch.mm`` with an fp32 result), ``torch`` (fp32 ``F.linear``, no TF32).

The problem (``RouterProblem``) is the call without M: ``device``, ``x_dtype``,
``weight_dtype``, ``bias`` (None or ``(dtype, shape)``), ``out_dtype``, ``hidden`` (H),
``weight_shape`` ([E, H]), ``dense`` (x, weight and out contiguous and 16-byte aligned, bias
contiguous), ``same_device`` (every tensor on x's device: no plan is ever built without it) and
``needs_grad``. The kernels' limits are their family's (``cute_kernels.kernels.router_gemm``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cute_kernels import ops as kernel_ops
from cute_kernels.checks import check_tensor, dtype_name, require
from cute_kernels.kernels import router_gemm as family

from .. import environment, tiers
from ..torch_math import check_devices, dense, finish, linear_fp32, same_device

_BF16, _FP16, _FP32 = torch.bfloat16, torch.float16, torch.float32
X_DTYPES = WEIGHT_DTYPES = (_BF16, _FP16, _FP32)
OUT_DTYPES = (_FP32, _BF16)
BIAS_DTYPES = (_BF16, _FP16, _FP32, torch.float64)  # a float64 bias runs on the torch tiers


class RouterProblem(NamedTuple):
    device: torch.device
    x_dtype: torch.dtype
    weight_dtype: torch.dtype
    bias: tuple | None
    out_dtype: torch.dtype
    hidden: int
    weight_shape: torch.Size
    dense: bool
    same_device: bool = True
    needs_grad: bool = False

    @property
    def experts(self) -> int:
        return self.weight_shape[0]

    @property
    def tuning_key(self):
        return (dtype_name(self.x_dtype), dtype_name(self.weight_dtype)), (self.hidden, self.experts)

    def kernel_problem(self) -> family.Problem:
        return family.Problem(dtype_name(self.x_dtype), dtype_name(self.weight_dtype),
                              None if self.bias is None else dtype_name(self.bias[0]), dtype_name(self.out_dtype),
                              self.hidden, self.experts)

    def describe(self, m: int | None) -> str:
        bias = "no bias" if self.bias is None else f"bias {dtype_name(self.bias[0])}"
        return (f"x {dtype_name(self.x_dtype)} [{'M' if m is None else m}, {self.hidden}], weight "
                f"{dtype_name(self.weight_dtype)} {list(self.weight_shape)}, {bias} -> {dtype_name(self.out_dtype)}"
                f"{'' if self.dense else ' (not dense and 16-byte aligned)'} on {self.device} "
                f"({tiers.problem_arch(self) or 'no GPU arch'})")


def problem_key(x, weight, bias, out_dtype, out):
    """``(key, M)``: the hot path's plain-tuple form of ``RouterProblem``."""
    m, hidden = x.shape
    device = x.device
    is_dense = (x.is_contiguous() and weight.is_contiguous() and not (x.data_ptr() | weight.data_ptr()) % 16
                and (bias is None or bias.is_contiguous()) and (out is None or dense(out)))
    # The common call (no bias, no out) compares one device and skips same_device's loop.
    key = (device, x.dtype, weight.dtype, None if bias is None else (bias.dtype, bias.shape), out_dtype,
           hidden, weight.shape, is_dense,
           weight.device == device and (bias is None and out is None or same_device(device, bias, out)),
           tiers.needs_grad(x, weight, bias))
    return key, m


def check_args(x, weight, bias, out_dtype, out) -> None:
    """The errors the spec raises, for the dtypes the dispatcher takes."""
    check_tensor("x", x, X_DTYPES, (None, None))
    check_tensor("weight", weight, WEIGHT_DTYPES, (None, None))
    require(weight.shape[1] == x.shape[1],
            f"weight has shape {tuple(weight.shape)}, which does not match x's hidden size {x.shape[1]}")
    if bias is not None:
        check_tensor("bias", bias, BIAS_DTYPES, (None,))
        require(bias.shape[0] == weight.shape[0],
                f"bias has length {bias.shape[0]}, not the number of experts {weight.shape[0]}")
    require(out_dtype in OUT_DTYPES, f"out_dtype must be float32 or bfloat16; got {out_dtype}", TypeError)
    if out is not None:
        check_tensor("out", out, (out_dtype,), (None, None))
    check_devices("x", x, weight=weight, bias=bias, out=out)


def _fake(x, weight, bias, out_dtype):
    check_args(x, weight, bias, out_dtype, None)
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=out_dtype)


def _examples(preset, device):
    weight = torch.randn(preset.num_experts, preset.hidden_size, device=device).to(getattr(torch, preset.gate_dtype))
    bias = torch.randn(preset.num_experts, device=device).to(weight.dtype) if preset.gate_bias else None
    out_dtype = getattr(torch, preset.logits_dtype)
    return [lambda m: (torch.randn(m, preset.hidden_size, device=device).to(_BF16), weight, bias, out_dtype, None)]


# -- tiers ---------------------------------------------------------------------------------------
def _cute_eligible(variant: str):
    def eligible(p: RouterProblem) -> str | None:
        if why := family.supports(p.kernel_problem(), variant):
            return why
        if not p.dense:
            return "x, weight and out must be contiguous and 16-byte aligned (and bias contiguous)"
        return environment.cute_unavailable(p.device)
    return eligible


def _cute(variant: str):
    """The CuTe tier bound to a problem: ``cute_kernels.router_gemm``'s launcher, which checks
    only ``out``; the problem holds the rest of what that op checks."""
    def bind(p: RouterProblem):
        return kernel_ops.router_gemm_launcher(p.x_dtype, p.weight_dtype, None if p.bias is None else p.bias[0],
                                               p.out_dtype, p.hidden, p.experts, variant, p.device, True)
    return bind


def _kernel_max_rows(p: RouterProblem) -> int:
    return family.max_rows(p.hidden, p.experts)


_HAS_MM_OUT_DTYPE = hasattr(torch.ops.aten.mm, "dtype")


def _cublas_eligible(p: RouterProblem) -> str | None:
    if p.device.type != "cuda":
        return f"needs CUDA tensors; they are on {p.device.type}"
    if p.x_dtype != p.weight_dtype or p.x_dtype not in (_BF16, _FP16):
        return (f"needs x and weight of one 16-bit dtype; got {dtype_name(p.x_dtype)} and "
                f"{dtype_name(p.weight_dtype)}")
    if not _HAS_MM_OUT_DTYPE:
        return "this torch has no torch.mm(..., out_dtype=)"
    return None


def _cublas(x, weight, bias, out_dtype, out):
    logits = torch.mm(x, weight.t(), out_dtype=torch.float32)
    if bias is not None:
        logits += bias
    return finish(logits, out_dtype, out, "out")


def _torch(x, weight, bias, out_dtype, out):
    return finish(linear_fp32(x, weight, bias), out_dtype, out, "out")


OP = tiers.add_op(tiers.Op("router_gemm", [
    tiers.Tier("cute-mma", _cute_eligible("mma"), max_rows=_kernel_max_rows, bind=_cute("mma")),
    tiers.Tier("cute-dot", _cute_eligible("dot"), max_rows=_kernel_max_rows, bind=_cute("dot")),
    tiers.Tier("cublas", _cublas_eligible, _cublas),
    tiers.Tier("torch", lambda p: None, _torch),
], params=("x", "weight", tiers.Param("bias", None), tiers.Param("out_dtype", _FP32), tiers.Param("out", None)),
    outputs=("out",), schema="(Tensor x, Tensor weight, Tensor? bias, ScalarType out_dtype) -> Tensor",
    problem=RouterProblem, key=problem_key, check=check_args, fake=_fake, examples=_examples))

_is_compiling = torch.compiler.is_compiling


def router_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                out_dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None) -> torch.Tensor:
    """Router logits ``x @ weight.T (+ bias)`` rounded once to ``out_dtype`` (fp32 or bf16).

    x [M, H] bf16/fp16/fp32, weight [E, H] bf16/fp16/fp32, bias [E] or None, out [M, E].
    Semantics: ``cute_kernels.reference.router_gemm``."""
    if _is_compiling():
        return OP.compiled(x, weight, bias, out_dtype, out)
    return OP.run(x, weight, bias, out_dtype, out)
