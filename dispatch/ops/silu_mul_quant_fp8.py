"""SiLU*Mul + FP8 block quantisation: ``cute`` (``cute_kernels.silu_mul_quant_fp8``), then
``torch`` (the spec itself, ``cute_kernels.reference.silu_mul_quant_fp8``).

The problem (``SiluQuantProblem``): ``device``, ``x_dtype``, ``width`` (2H), ``group_size``,
``ue8m0``, ``scale_layout``, ``scale_ub`` (None or ``(dtype, device, numel)``), ``dense`` (x
contiguous and 16-byte aligned, out contiguous and 8-byte aligned, scales laid out as
``scale_layout`` says), ``same_device`` (out and scales on x's device: no plan is ever built
without it; ``scale_ub`` may be elsewhere) and ``needs_grad``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cute_kernels import ops as kernel_ops
from cute_kernels import reference as spec
from cute_kernels.checks import check_tensor, dtype_name, require
from cute_kernels.kernels import silu_mul_quant_fp8 as family

from .. import environment, tiers
from ..torch_math import check_devices, check_out, dense, same_device


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
    needs_grad: bool = False

    @property
    def tuning_key(self):
        return (dtype_name(self.x_dtype),), (self.width // 2,)

    def kernel_problem(self) -> family.Problem:
        return family.Problem(dtype_name(self.x_dtype), self.width // 2, self.group_size, self.scale_layout)

    def describe(self, m: int | None) -> str:
        return (f"x {dtype_name(self.x_dtype)} [{'T' if m is None else m}, {self.width}], group {self.group_size}, "
                f"{self.scale_layout} scales{', ue8m0' if self.ue8m0 else ''}"
                f"{'' if self.scale_ub is None else ', scale_ub'}{'' if self.dense else ' (not dense/aligned)'}"
                f" on {self.device} ({tiers.problem_arch(self) or 'no GPU arch'})")


def _scales_laid_out(scales: torch.Tensor, layout: str) -> bool:
    return scales.is_contiguous() if layout == "row" else scales.t().is_contiguous()


def problem_key(x, group_size, scale_ub, ue8m0, scale_layout, out, scales):
    m, width = x.shape
    device = x.device
    is_dense = (dense(x) and (out is None or dense(out, 8))
                and (scales is None or _scales_laid_out(scales, scale_layout)))
    ub = None if scale_ub is None else (scale_ub.dtype, scale_ub.device, scale_ub.numel())
    return (device, x.dtype, width, group_size, ue8m0, scale_layout, ub, is_dense,
            same_device(device, out, scales), tiers.needs_grad(x)), m


def check_args(x, group_size, scale_ub, ue8m0, scale_layout, out, scales) -> None:
    check_tensor("x", x, (torch.bfloat16, torch.float16), (None, None))
    require(group_size in family.GROUP_SIZES, f"group_size must be 64 or 128; got {group_size!r}")
    require(scale_layout in family.SCALE_LAYOUTS, f"scale_layout must be 'row' or 'col'; got {scale_layout!r}")
    require(x.shape[1] % 2 == 0, f"x must have an even width ([gate | up]); got shape {tuple(x.shape)}")
    h = x.shape[1] // 2
    require(h % group_size == 0, f"x's half-width H={h} must be a multiple of group_size={group_size}")
    if scale_ub is not None and not (isinstance(scale_ub, torch.Tensor) and scale_ub.dtype == torch.float32
                                     and scale_ub.numel() == 1):
        raise TypeError("scale_ub must be a one-element float32 tensor")
    if out is not None:
        check_tensor("out", out, (torch.float8_e4m3fn,), (None, None))
    if scales is not None:
        check_tensor("scales", scales, (torch.float32,), (None, None))
    check_devices("x", x, out=out, scales=scales)


def _fake(x, group_size, scale_ub, ue8m0, scale_layout):
    check_args(x, group_size, scale_ub, ue8m0, scale_layout, None, None)
    t, h = x.shape[0], x.shape[1] // 2
    g = h // group_size
    strides = (g, 1) if scale_layout == "row" else (1, t)
    return (x.new_empty((t, h), dtype=torch.float8_e4m3fn),
            x.new_empty_strided((t, g), strides, dtype=torch.float32))


def _examples(preset, device):
    h = preset.moe_intermediate_size
    return [lambda m: (torch.randn(m, 2 * h, device=device).to(torch.bfloat16), family.preset_group_size(h), None,
                       False, "row", None, None)]


# -- tiers ---------------------------------------------------------------------------------------
def _cute_eligible(p: SiluQuantProblem) -> str | None:
    if why := family.supports(p.kernel_problem()):
        return why
    if p.scale_ub is not None and p.scale_ub[1] != p.device:
        return f"scale_ub is on {p.scale_ub[1]}, not on x's device {p.device}"
    if not p.dense:
        return ("x must be contiguous and 16-byte aligned, out contiguous and 8-byte aligned, and scales "
                f"laid out as scale_layout={p.scale_layout!r} says")
    return environment.cute_unavailable(p.device)


def _cute_max_rows(p: SiluQuantProblem) -> int:
    return family.max_rows(p.kernel_problem())


def _bind_cute(p: SiluQuantProblem):
    """``cute_kernels.silu_mul_quant_fp8``'s launcher, which checks only ``out`` and ``scales``."""
    return kernel_ops.silu_mul_quant_launcher(p.x_dtype, p.width // 2, p.group_size, bool(p.ue8m0),
                                              p.scale_ub is not None, p.scale_layout, p.device, True)


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


OP = tiers.add_op(tiers.Op("silu_mul_quant_fp8", [
    tiers.Tier("cute", _cute_eligible, max_rows=_cute_max_rows, bind=_bind_cute),
    tiers.Tier("torch", lambda p: None, _torch),
], params=("x", tiers.Param("group_size", 128), tiers.Param("scale_ub", None), tiers.Param("ue8m0", False),
           tiers.Param("scale_layout", "row"), tiers.Param("out", None), tiers.Param("scales", None)),
    outputs=("out", "scales"),
    schema="(Tensor x, int group_size, Tensor? scale_ub, bool ue8m0, str scale_layout) -> (Tensor, Tensor)",
    problem=SiluQuantProblem, key=problem_key, check=check_args, fake=_fake, examples=_examples))

_is_compiling = torch.compiler.is_compiling


def silu_mul_quant_fp8(x: torch.Tensor, group_size: int = 128, *, scale_ub: torch.Tensor | None = None,
                       ue8m0: bool = False, scale_layout: str = "row", out: torch.Tensor | None = None,
                       scales: torch.Tensor | None = None):
    """``silu(gate) * up`` quantised to float8_e4m3fn per group: ``(q [T, H], scales [T, H // group])``.

    x [T, 2H] bf16/fp16 = [gate | up]; scales row-major, or strides (1, T) for
    ``scale_layout="col"``. Semantics: ``cute_kernels.reference.silu_mul_quant_fp8``."""
    if _is_compiling():
        return OP.compiled(x, group_size, scale_ub, ue8m0, scale_layout, out, scales)
    return OP.run(x, group_size, scale_ub, ue8m0, scale_layout, out, scales)
