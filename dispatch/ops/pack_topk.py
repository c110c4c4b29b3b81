"""Top-k packing: ``cute`` (``cute_kernels.pack_topk``), then ``torch`` (the spec,
``cute_kernels.reference.pack_topk``).

The problem (``PackTopkProblem``): ``device``, ``ids_dtype``, ``weights_dtype``, ``k``, ``dense``
(ids, weights and out contiguous; the kernel specialises on alignment itself), ``same_device``
(weights and out on ids' device), ``same_shape`` (weights of ids' shape) and ``needs_grad``; no
plan is ever built without ``same_device`` and ``same_shape``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cute_kernels import ops as kernel_ops
from cute_kernels import reference as spec
from cute_kernels.checks import check_tensor, dtype_name, require
from cute_kernels.kernels import pack_topk as family

from .. import environment, tiers
from ..torch_math import check_devices, check_out, same_device


class PackTopkProblem(NamedTuple):
    device: torch.device
    ids_dtype: torch.dtype
    weights_dtype: torch.dtype
    k: int
    dense: bool
    same_device: bool = True
    same_shape: bool = True
    needs_grad: bool = False

    @property
    def tuning_key(self):
        return (dtype_name(self.ids_dtype), dtype_name(self.weights_dtype)), (self.k,)

    def kernel_problem(self) -> family.Problem:
        return family.Problem(dtype_name(self.ids_dtype), dtype_name(self.weights_dtype), self.k)

    def describe(self, m: int | None) -> str:
        return (f"ids {dtype_name(self.ids_dtype)} [{'T' if m is None else m}, {self.k}], weights "
                f"{dtype_name(self.weights_dtype)}{'' if self.dense else ' (not contiguous)'} on {self.device} "
                f"({tiers.problem_arch(self) or 'no GPU arch'})")


def problem_key(ids, weights, out):
    m, k = ids.shape
    device = ids.device
    is_dense = ids.is_contiguous() and weights.is_contiguous() and (out is None or out.is_contiguous())
    return (device, ids.dtype, weights.dtype, k, is_dense, same_device(device, weights, out),
            weights.shape == (m, k), tiers.needs_grad(weights)), m


def check_args(ids, weights, out) -> None:
    check_tensor("ids", ids, (torch.int32, torch.int64), (None, None))
    check_tensor("weights", weights, (torch.float32, torch.bfloat16), (None, None))
    require(weights.shape == ids.shape,
            f"weights has shape {tuple(weights.shape)}, not ids' shape {tuple(ids.shape)}")
    if out is not None:
        check_tensor("out", out, (torch.int32,), (None, None))
    check_devices("ids", ids, weights=weights, out=out)


def _fake(ids, weights):
    check_args(ids, weights, None)
    return ids.new_empty(ids.shape, dtype=torch.int32)


def _examples(preset, device):
    # torch.topk gives int64 ids; kernels often int32
    return [lambda m, i=i, w=w: (torch.randint(0, preset.num_experts, (m, preset.top_k), dtype=i, device=device),
                                 torch.rand(m, preset.top_k, device=device).to(w), None)
            for i in (torch.int32, torch.int64) for w in (torch.float32, torch.bfloat16)]


def _cute_eligible(p: PackTopkProblem) -> str | None:
    if why := family.supports(p.kernel_problem()):
        return why
    if not p.dense:
        return "ids, weights and out must be contiguous"
    return environment.cute_unavailable(p.device)


def _cute_max_rows(p: PackTopkProblem) -> int:
    return family.max_rows(p.kernel_problem())


def _bind_cute(p: PackTopkProblem):
    """``cute_kernels.pack_topk``'s launcher, which checks only ``out``."""
    return kernel_ops.pack_topk_launcher(p.ids_dtype, p.weights_dtype, p.k, p.device, True)


def _torch(ids, weights, out):
    packed = spec.pack_topk(ids, weights)
    if out is None:
        return packed
    check_out("out", out, tuple(packed.shape), torch.int32)
    return out.copy_(packed)


OP = tiers.add_op(tiers.Op("pack_topk", [
    tiers.Tier("cute", _cute_eligible, max_rows=_cute_max_rows, bind=_bind_cute),
    tiers.Tier("torch", lambda p: None, _torch),
], params=("ids", "weights", tiers.Param("out", None)), outputs=("out",),
    schema="(Tensor ids, Tensor weights) -> Tensor",
    problem=PackTopkProblem, key=problem_key, check=check_args, fake=_fake, examples=_examples))

_is_compiling = torch.compiler.is_compiling


def pack_topk(ids: torch.Tensor, weights: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(id << 16) | bits(bf16(weight))`` as int32 [T, k].

    ids int32/int64 [T, k], weights fp32/bf16 [T, k]. Semantics: ``cute_kernels.reference.pack_topk``."""
    if _is_compiling():
        return OP.compiled(ids, weights, out)
    return OP.run(ids, weights, out)
