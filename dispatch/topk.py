"""Top-k packing tiers: ``cute`` (``cute_kernels.pack_topk``), then ``torch`` (the spec,
``cute_kernels.reference.pack_topk``).

The problem (``PackTopkProblem``): ``device``, ``ids_dtype``, ``weights_dtype``, ``k``, ``dense``
(ids, weights and out contiguous; the kernel specialises on alignment itself), ``same_device``
(weights and out on ids' device) and ``same_shape`` (weights of ids' shape); no plan is ever built
without the last two. ``arch`` is the device's arch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cute_kernels import reference as spec

from . import environment, tiers
from .torch_math import check_devices, check_out, check_tensor, dtype_name, require, same_device

MAX_ELEMENTS = 2**31 - 1


class PackTopkProblem(NamedTuple):
    device: torch.device
    ids_dtype: torch.dtype
    weights_dtype: torch.dtype
    k: int
    dense: bool
    same_device: bool = True
    same_shape: bool = True

    @property
    def arch(self) -> str | None:
        return environment.device_arch(self.device)

    @property
    def tuning_key(self):
        return (dtype_name(self.ids_dtype), dtype_name(self.weights_dtype)), (self.k,)

    def describe(self, m: int | None) -> str:
        return (f"ids {dtype_name(self.ids_dtype)} [{'T' if m is None else m}, {self.k}], weights "
                f"{dtype_name(self.weights_dtype)}{'' if self.dense else ' (not contiguous)'} on {self.device} "
                f"({self.arch or 'no GPU arch'})")


def problem_key(ids, weights, out):
    m, k = ids.shape
    device = ids.device
    is_dense = ids.is_contiguous() and weights.is_contiguous() and (out is None or out.is_contiguous())
    return (device, ids.dtype, weights.dtype, k, is_dense, same_device(device, weights, out),
            weights.shape == (m, k)), m


def check_args(ids, weights, out) -> None:
    check_tensor("ids", ids, 2, (torch.int32, torch.int64))
    check_tensor("weights", weights, 2, (torch.float32, torch.bfloat16))
    require(weights.shape == ids.shape,
            f"weights has shape {tuple(weights.shape)}, not ids' shape {tuple(ids.shape)}")
    if out is not None:
        check_tensor("out", out, 2, (torch.int32,))
    check_devices("ids", ids, weights=weights, out=out)


def run(ids, weights, out):
    """The eager path: cached plan, integer compare on T, the tier."""
    args = (ids, weights, out)
    try:
        key, m = problem_key(ids, weights, out)
    except (AttributeError, TypeError, ValueError):
        check_args(*args)
        raise
    return PACK_TOPK.run(key, m, args, check_args, PackTopkProblem)


def problem_of(ids, weights, *, out=None):
    check_args(ids, weights, out)
    key, m = problem_key(ids, weights, out)
    return PackTopkProblem(*key), m


def _cute_eligible(p: PackTopkProblem) -> str | None:
    if not p.dense:
        return "ids, weights and out must be contiguous"
    return environment.cute_unavailable(p.device, "pack_topk")


def _cute_max_rows(p: PackTopkProblem) -> int:
    return MAX_ELEMENTS // max(p.k, 1)


def _bind_cute(p: PackTopkProblem):
    """``cute_kernels.pack_topk``'s launcher, which checks only ``out``."""
    from cute_kernels import ops

    return ops.pack_topk_launcher(p.ids_dtype, p.weights_dtype, p.k, p.device, True)


def _torch(ids, weights, out):
    packed = spec.pack_topk(ids, weights)
    if out is None:
        return packed
    check_out("out", out, tuple(packed.shape), torch.int32)
    return out.copy_(packed)


PACK_TOPK = tiers.add_op(tiers.OpTiers("pack_topk", [
    tiers.Tier("cute", _cute_eligible, max_rows=_cute_max_rows, bind=_bind_cute),
    tiers.Tier("torch", lambda p: None, _torch),
], problem_of))
