"""Router GEMM tiers: ``logits = x @ weight.T (+ bias)``, rounded once to ``out_dtype``.

Tiers, in order: ``cute-mma`` (CuTe tensor-core kernel), ``cute-dot`` (CuTe dot-product
kernel), ``cublas`` (``torch.mm`` with an fp32 result), ``torch`` (fp32 ``F.linear``, no TF32).

The problem (``RouterProblem``) is the call without M: ``device``, ``x_dtype``,
``weight_dtype``, ``bias`` (None or ``(dtype, shape)``), ``out_dtype``, ``hidden`` (H),
``weight_shape`` ([E, H]), ``dense`` (x, weight and out contiguous and 16-byte aligned, bias
contiguous) and ``same_device`` (every tensor on x's device: no plan is ever built without it);
``arch`` is the device's arch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import environment, tiers
from .torch_math import check_devices, check_tensor, dense, dtype_name, finish, linear_fp32, require, same_device

_BF16, _FP16, _FP32 = torch.bfloat16, torch.float16, torch.float32
X_DTYPES = (_BF16, _FP16, _FP32)
WEIGHT_DTYPES = (_BF16, _FP16, _FP32)  # fp16 weights: beyond the spec's bf16/fp32, same formula
OUT_DTYPES = (_FP32, _BF16)
BIAS_DTYPES = (_BF16, _FP16, _FP32, torch.float64)
MAX_HIDDEN = 65536
# (x, weight) dtypes the tensor-core kernel takes (= cute_kernels.ops.mma_dtypes).
MMA_DTYPE_PAIRS = ((_BF16, _BF16), (_FP16, _FP16), (_BF16, _FP32))
# = cute_kernels.ops.ROUTER_MMA_MAX_H, 16-bit weights (half for fp32 ones): the tensor-core
# kernel's share of H must fit in shared memory.
MMA_MAX_HIDDEN = 32768
MAX_ELEMENTS = 2**31 - 1  # the kernels index with 32-bit integers


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

    @property
    def arch(self) -> str | None:
        return environment.device_arch(self.device)

    @property
    def experts(self) -> int:
        return self.weight_shape[0]

    @property
    def tuning_key(self):
        return (dtype_name(self.x_dtype), dtype_name(self.weight_dtype)), (self.hidden, self.experts)

    def describe(self, m: int | None) -> str:
        bias = "no bias" if self.bias is None else f"bias {dtype_name(self.bias[0])}"
        return (f"x {dtype_name(self.x_dtype)} [{'M' if m is None else m}, {self.hidden}], weight "
                f"{dtype_name(self.weight_dtype)} {list(self.weight_shape)}, {bias} -> {dtype_name(self.out_dtype)}"
                f"{'' if self.dense else ' (not dense and 16-byte aligned)'} on {self.device} "
                f"({self.arch or 'no GPU arch'})")


def problem_key(x, weight, bias, out_dtype, out):
    """``(key, M)``: the hot path's plain-tuple form of ``RouterProblem``."""
    m, hidden = x.shape
    device = x.device
    is_dense = (x.is_contiguous() and weight.is_contiguous() and not (x.data_ptr() | weight.data_ptr()) % 16
                and (bias is None or bias.is_contiguous()) and (out is None or dense(out)))
    # The common call (no bias, no out) compares one device and skips same_device's loop.
    key = (device, x.dtype, weight.dtype, None if bias is None else (bias.dtype, bias.shape), out_dtype,
           hidden, weight.shape, is_dense,
           weight.device == device and (bias is None and out is None or same_device(device, bias, out)))
    return key, m


def check_args(x, weight, bias, out_dtype, out) -> None:
    """The errors the spec raises, for the dtypes the dispatcher takes."""
    check_tensor("x", x, 2, X_DTYPES)
    check_tensor("weight", weight, 2, WEIGHT_DTYPES)
    require(weight.shape[1] == x.shape[1],
            f"weight has shape {tuple(weight.shape)}, which does not match x's hidden size {x.shape[1]}")
    if bias is not None:
        check_tensor("bias", bias, 1, BIAS_DTYPES)
        require(bias.shape[0] == weight.shape[0],
                f"bias has length {bias.shape[0]}, not the number of experts {weight.shape[0]}")
    if out_dtype not in OUT_DTYPES:
        raise TypeError(f"out_dtype must be float32 or bfloat16; got {out_dtype}")
    if out is not None:
        check_tensor("out", out, 2, (out_dtype,))
    check_devices("x", x, weight=weight, bias=bias, out=out)


def run(x, weight, bias, out_dtype, out):
    """The eager path: cached plan, integer compare on M, the tier."""
    args = (x, weight, bias, out_dtype, out)
    try:
        key, m = problem_key(x, weight, bias, out_dtype, out)
    except (AttributeError, TypeError, ValueError):
        check_args(*args)
        raise
    return ROUTER.run(key, m, args, check_args, RouterProblem)


def problem_of(x, weight, bias=None, *, out_dtype=torch.float32, out=None):
    check_args(x, weight, bias, out_dtype, out)
    key, m = problem_key(x, weight, bias, out_dtype, out)
    return RouterProblem(*key), m


# -- eligibility ---------------------------------------------------------------------------------
def kernel_limits(p: RouterProblem) -> str | None:
    """What both CuTe kernels need beyond dtypes."""
    if p.hidden % 8 or p.hidden == 0:
        return f"H={p.hidden} is not a positive multiple of 8"
    if p.hidden > MAX_HIDDEN:
        return f"H={p.hidden} is over {MAX_HIDDEN}"
    if p.experts == 0 or p.experts * p.hidden > MAX_ELEMENTS:
        return f"E={p.experts} is not in [1, {MAX_ELEMENTS // p.hidden}] for H={p.hidden}"
    if p.bias is not None and p.bias[0] == torch.float64:
        return "a float64 bias is not supported by the kernels"
    if not p.dense:
        return "x, weight and out must be contiguous and 16-byte aligned (and bias contiguous)"
    return None


def _mma_eligible(p: RouterProblem) -> str | None:
    if (p.x_dtype, p.weight_dtype) not in MMA_DTYPE_PAIRS:
        return (f"needs x and weight both bfloat16 or both float16, or bfloat16 x with float32 weights; got "
                f"{dtype_name(p.x_dtype)} and {dtype_name(p.weight_dtype)}")
    max_hidden = MMA_MAX_HIDDEN * 2 // p.weight_dtype.itemsize
    if p.hidden > max_hidden:
        return (f"H={p.hidden} is over {max_hidden} for {dtype_name(p.weight_dtype)} weights (a CTA's share of H "
                "must fit in shared memory)")
    return kernel_limits(p) or environment.cute_unavailable(p.device, "router_gemm")


def _dot_eligible(p: RouterProblem) -> str | None:
    if p.weight_dtype not in (_BF16, _FP32):
        return f"needs a bfloat16 or float32 weight; got {dtype_name(p.weight_dtype)}"
    return kernel_limits(p) or environment.cute_unavailable(p.device, "router_gemm")


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


def _kernel_max_rows(p: RouterProblem) -> int:
    return MAX_ELEMENTS // max(p.hidden, p.experts, 1)


# -- implementations -----------------------------------------------------------------------------
def _cute(variant: str):
    """The CuTe tier bound to a problem: ``cute_kernels.router_gemm``'s launcher, which checks
    only ``out``; the problem holds the rest of what that op checks (``kernel_limits``)."""
    def bind(p: RouterProblem):
        from cute_kernels import ops

        return ops.router_gemm_launcher(p.x_dtype, p.weight_dtype, None if p.bias is None else p.bias[0],
                                        p.out_dtype, p.hidden, p.experts, variant, p.device, True)
    return bind


def _cublas(x, weight, bias, out_dtype, out):
    logits = torch.mm(x, weight.t(), out_dtype=torch.float32)
    if bias is not None:
        logits += bias
    return finish(logits, out_dtype, out, "out")


def _torch(x, weight, bias, out_dtype, out):
    return finish(linear_fp32(x, weight, bias), out_dtype, out, "out")


def _always(p) -> None:
    return None


ROUTER = tiers.add_op(tiers.OpTiers("router_gemm", [
    tiers.Tier("cute-mma", _mma_eligible, max_rows=_kernel_max_rows, bind=_cute("mma")),
    tiers.Tier("cute-dot", _dot_eligible, max_rows=_kernel_max_rows, bind=_cute("dot")),
    tiers.Tier("cublas", _cublas_eligible, _cublas),
    tiers.Tier("torch", _always, _torch),
], problem_of))
