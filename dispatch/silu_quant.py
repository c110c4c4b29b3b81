"""SiLU*Mul + FP8 block quantisation tiers: ``cute`` (``cute_kernels.silu_mul_quant_fp8``), then
``torch`` (the spec itself, ``cute_kernels.reference.silu_mul_quant_fp8``).

The problem (``SiluQuantProblem``): ``device``, ``x_dtype``, ``width`` (2H), ``group_size``,
``ue8m0``, ``scale_layout``, ``scale_ub`` (None or ``(dtype, device, numel)``), ``dense`` (x
contiguous and 16-byte aligned, out contiguous and 8-byte aligned, scales laid out as
``scale_layout`` says) and ``same_device`` (out and scales on x's device: no plan is ever built
without it; ``scale_ub`` may be elsewhere); ``arch`` is the device's arch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cute_kernels import reference as spec

from . import environment, tiers
from .torch_math import check_devices, check_out, check_tensor, dense, dtype_name, require, same_device

MAX_ELEMENTS = 2**31 - 1


class SiluQuantProblem(NamedTuple):
    device: torch.device
    x_dtype: torch.dtype
    width: int
    group_size: int
    ue8m0: bool
    scale_layout: str
    scale_ub: tuple | None
    dense: bool
    same_device: bool = True

    @property
    def arch(self) -> str | None:
        return environment.device_arch(self.device)

    @property
    def tuning_key(self):
        return (dtype_name(self.x_dtype),), (self.width // 2,)

    def describe(self, m: int | None) -> str:
        return (f"x {dtype_name(self.x_dtype)} [{'T' if m is None else m}, {self.width}], group {self.group_size}, "
                f"{self.scale_layout} scales{', ue8m0' if self.ue8m0 else ''}"
                f"{'' if self.scale_ub is None else ', scale_ub'}{'' if self.dense else ' (not dense/aligned)'}"
                f" on {self.device} ({self.arch or 'no GPU arch'})")


def _scales_laid_out(scales: torch.Tensor, layout: str) -> bool:
    return scales.is_contiguous() if layout == "row" else scales.t().is_contiguous()


def problem_key(x, group_size, scale_ub, ue8m0, scale_layout, out, scales):
    m, width = x.shape
    device = x.device
    is_dense = (dense(x) and (out is None or dense(out, 8))
                and (scales is None or _scales_laid_out(scales, scale_layout)))
    ub = None if scale_ub is None else (scale_ub.dtype, scale_ub.device, scale_ub.numel())
    return (device, x.dtype, width, group_size, ue8m0, scale_layout, ub, is_dense,
            same_device(device, out, scales)), m


def check_args(x, group_size, scale_ub, ue8m0, scale_layout, out, scales) -> None:
    check_tensor("x", x, 2, (torch.bfloat16, torch.float16))
    require(group_size in (64, 128), f"group_size must be 64 or 128; got {group_size!r}")
    require(scale_layout in ("row", "col"), f"scale_layout must be 'row' or 'col'; got {scale_layout!r}")
    require(x.shape[1] % 2 == 0, f"x must have an even width ([gate | up]); got shape {tuple(x.shape)}")
    h = x.shape[1] // 2
    require(h % group_size == 0, f"x's half-width H={h} must be a multiple of group_size={group_size}")
    if scale_ub is not None and not (isinstance(scale_ub, torch.Tensor) and scale_ub.dtype == torch.float32
                                     and scale_ub.numel() == 1):
        raise TypeError("scale_ub must be a one-element float32 tensor")
    if out is not None:
        check_tensor("out", out, 2, (torch.float8_e4m3fn,))
    if scales is not None:
        check_tensor("scales", scales, 2, (torch.float32,))
    check_devices("x", x, out=out, scales=scales)


def run(x, group_size, scale_ub, ue8m0, scale_layout, out, scales):
    """The eager path: cached plan, integer compare on T, the tier."""
    args = (x, group_size, scale_ub, ue8m0, scale_layout, out, scales)
    try:
        key, m = problem_key(x, group_size, scale_ub, ue8m0, scale_layout, out, scales)
    except (AttributeError, TypeError, ValueError):
        check_args(*args)
        raise
    return SILU_QUANT.run(key, m, args, check_args, SiluQuantProblem)


def problem_of(x, group_size=128, *, scale_ub=None, ue8m0=False, scale_layout="row", out=None, scales=None):
    check_args(x, group_size, scale_ub, ue8m0, scale_layout, out, scales)
    key, m = problem_key(x, group_size, scale_ub, ue8m0, scale_layout, out, scales)
    return SiluQuantProblem(*key), m


def _cute_eligible(p: SiluQuantProblem) -> str | None:
    if p.width == 0:
        return "H=0: nothing for a kernel to do"
    if p.scale_ub is not None and p.scale_ub[1] != p.device:
        return f"scale_ub is on {p.scale_ub[1]}, not on x's device {p.device}"
    if not p.dense:
        return ("x must be contiguous and 16-byte aligned, out contiguous and 8-byte aligned, and scales "
                f"laid out as scale_layout={p.scale_layout!r} says")
    return environment.cute_unavailable(p.device, "silu_mul_quant_fp8")


def _cute_max_rows(p: SiluQuantProblem) -> int:
    return MAX_ELEMENTS // max(p.width, 1)


def _bind_cute(p: SiluQuantProblem):
    """``cute_kernels.silu_mul_quant_fp8``'s launcher, which checks only ``out`` and ``scales``."""
    from cute_kernels import ops

    return ops.silu_mul_quant_launcher(p.x_dtype, p.width // 2, p.group_size, bool(p.ue8m0), p.scale_ub is not None,
                                       p.scale_layout, p.device, True)


def _torch(x, group_size, scale_ub, ue8m0, scale_layout, out, scales):
    q, s = spec.silu_mul_quant_fp8(x, group_size, scale_ub=scale_ub, ue8m0=ue8m0, scale_layout=scale_layout)
    if out is not None:
        check_out("out", out, tuple(q.shape), q.dtype)
    if scales is not None:
        check_out("scales", scales, tuple(s.shape), s.dtype)
        if not _scales_laid_out(scales, scale_layout):  # refused as the kernel refuses them
            raise ValueError(f"scales must have strides {s.stride()} for scale_layout={scale_layout!r}; "
                             f"got {scales.stride()}")
        s = scales.copy_(s)
    # The spec's q has x's strides; the kernel's is always row-major.
    q = q.contiguous() if out is None else out.copy_(q)
    return q, s


SILU_QUANT = tiers.add_op(tiers.OpTiers("silu_mul_quant_fp8", [
    tiers.Tier("cute", _cute_eligible, max_rows=_cute_max_rows, bind=_bind_cute),
    tiers.Tier("torch", lambda p: None, _torch),
], problem_of))
