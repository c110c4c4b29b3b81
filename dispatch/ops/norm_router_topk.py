"""The routing step from the residual stream: RMSNorm, router GEMM, scoring and top-k, as
``cute_kernels.reference.norm_router_topk``: ``(normed_x, weights, ids)``, or ``(normed_x,
packed)``.

Tiers, in order: ``cute-fused`` (``cute_kernels.norm_router_topk``, one kernel), ``unfused`` (the
norm-router dispatch into fp32 logits, then ``cute_kernels.route``), ``torch`` (RMSNorm and the
GEMM in fp32 torch, then the spec's routing).

The problem (``NormRouterTopkProblem``): ``device``, ``x_dtype``, ``norm_dtype``, ``gate_dtype``,
``hidden``, ``gate_shape``, ``routing``, ``correction_bias`` (None or ``(dtype, shape)``),
``packed``, ``dense``, ``same_device``, ``norm_ok`` (norm_weight of length H, eps >= 0) and
``needs_grad``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cute_kernels import ops as kernel_ops
from cute_kernels.checks import dtype_name
from cute_kernels.kernels import router_gemm as family
from cute_kernels.routing import RoutingConfig

from .. import environment, tiers
from ..torch_math import check_devices, dense, finish, linear_fp32, rms_norm_fp32, same_device
from . import norm_router_gemm, router_topk

_FP32 = torch.float32


class NormRouterTopkProblem(NamedTuple):
    device: torch.device
    x_dtype: torch.dtype
    norm_dtype: torch.dtype
    gate_dtype: torch.dtype
    hidden: int
    gate_shape: torch.Size
    routing: RoutingConfig
    correction_bias: tuple | None
    packed: bool
    dense: bool
    same_device: bool = True
    norm_ok: bool = True
    needs_grad: bool = False

    @property
    def experts(self) -> int:
        return self.gate_shape[0]

    @property
    def tuning_key(self):
        return (dtype_name(self.x_dtype), dtype_name(self.gate_dtype)), (self.hidden, self.experts)

    def kernel_problem(self) -> family.NormProblem:
        return family.NormProblem(dtype_name(self.x_dtype), dtype_name(self.norm_dtype), dtype_name(self.gate_dtype),
                                  "float32", self.hidden, self.experts)

    def describe(self, m: int | None) -> str:
        r = self.routing
        return (f"x {dtype_name(self.x_dtype)} [{'M' if m is None else m}, {self.hidden}], norm_weight "
                f"{dtype_name(self.norm_dtype)}, gate_weight {dtype_name(self.gate_dtype)} {list(self.gate_shape)}, "
                f"{r.scoring} top-{r.top_k}" + (", packed" if self.packed else "")
                + f"{'' if self.dense else ' (not dense)'} on {self.device} ({tiers.problem_arch(self) or 'no GPU arch'})")


def problem_key(x, norm_weight, gate_weight, eps, routing, correction_bias, normed_out, out_weights, out_ids,
                logits_out, packed):
    m, hidden = x.shape
    device = x.device
    is_dense = (dense(x) and dense(norm_weight) and dense(gate_weight) and (normed_out is None or dense(normed_out))
                and (correction_bias is None or correction_bias.is_contiguous())
                and (out_weights is None or out_weights.is_contiguous()) and (out_ids is None or out_ids.is_contiguous())
                and (logits_out is None or dense(logits_out)))
    key = (device, x.dtype, norm_weight.dtype, gate_weight.dtype, hidden, gate_weight.shape, routing,
           None if correction_bias is None else (correction_bias.dtype, correction_bias.shape), packed, is_dense,
           same_device(device, norm_weight, gate_weight, correction_bias, normed_out, out_weights, out_ids, logits_out),
           norm_weight.shape == (hidden,) and float(eps) >= 0.0, tiers.needs_grad(x, norm_weight, gate_weight))
    return key, m


def check_args(x, norm_weight, gate_weight, eps, routing, correction_bias, normed_out, out_weights, out_ids,
               logits_out, packed) -> None:
    norm_router_gemm.check_args(x, norm_weight, gate_weight, eps, _FP32, normed_out, None)
    router_topk.check_routing(routing, gate_weight.shape[0], correction_bias)
    router_topk.check_selection_outputs(x.shape[0], routing.top_k, gate_weight.shape[0], out_weights, out_ids,
                                        logits_out, packed)
    check_devices("x", x, correction_bias=correction_bias, out_weights=out_weights, out_ids=out_ids,
                  logits_out=logits_out)


# -- tiers ---------------------------------------------------------------------------------------
def _fused_eligible(p: NormRouterTopkProblem) -> str | None:
    if why := family.supports_norm(p.kernel_problem()) or family.tiling.supports_selection(p.routing, p.experts):
        return why
    if not p.dense:
        return "x, norm_weight, gate_weight and normed_out must be contiguous and 16-byte aligned"
    return environment.cute_unavailable(p.device)


def _bind_fused(p: NormRouterTopkProblem):
    launch = kernel_ops.norm_router_topk_launcher(p.x_dtype, p.norm_dtype, p.gate_dtype, p.hidden, p.experts,
                                                  p.routing, p.packed, p.device, True)
    return lambda m, x, nw, gw, eps, routing, cbias, no, ow, oi, lo, packed: launch(m, x, nw, gw, eps, cbias, no, ow,
                                                                                    oi, lo)


def _unfused_eligible(p: NormRouterTopkProblem) -> str | None:
    return router_topk.route_eligible(p.device, p.routing, p.experts)


def _unfused(x, norm_weight, gate_weight, eps, routing, correction_bias, normed_out, out_weights, out_ids,
             logits_out, packed):
    normed, logits = norm_router_gemm.OP.run(x, norm_weight, gate_weight, eps, _FP32, normed_out, logits_out)
    return (normed, *_as_tuple(router_topk.route(logits, routing, correction_bias, out_weights, out_ids, packed,
                                                 True)))


def _torch(x, norm_weight, gate_weight, eps, routing, correction_bias, normed_out, out_weights, out_ids, logits_out,
           packed):
    n = rms_norm_fp32(x, norm_weight, eps)
    logits = finish(linear_fp32(n, gate_weight, None), _FP32, logits_out, "logits_out")
    return (finish(n, x.dtype, normed_out, "normed_out"),
            *_as_tuple(router_topk.route(logits, routing, correction_bias, out_weights, out_ids, packed, False)))


def _as_tuple(selected):
    return selected if isinstance(selected, tuple) else (selected,)


def _kernel_max_rows(p: NormRouterTopkProblem) -> int:
    return family.max_rows(p.hidden, p.experts)


SCHEMA = ("(Tensor x, Tensor norm_weight, Tensor gate_weight, float eps, str routing, Tensor? correction_bias, "
          "bool packed, bool want_logits) -> (Tensor, Tensor, Tensor, Tensor)")


def _impl(x, norm_weight, gate_weight, eps, routing, correction_bias, packed, want_logits):
    logits = x.new_empty(x.shape[0], gate_weight.shape[0], dtype=_FP32) if want_logits else None
    normed, *selected = OP.run(x, norm_weight, gate_weight, eps, RoutingConfig.from_text(routing), correction_bias,
                               None, None, None, logits, packed)
    return (normed, *router_topk.selection_results(selected[0] if packed else tuple(selected), packed, logits, x))


def _fake(x, norm_weight, gate_weight, eps, routing, correction_bias, packed, want_logits):
    routing = RoutingConfig.from_text(routing)
    check_args(x, norm_weight, gate_weight, eps, routing, correction_bias, None, None, None, None, packed)
    m, k, e = x.shape[0], routing.top_k, gate_weight.shape[0]
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty((0,) if packed else (m, k), dtype=_FP32), x.new_empty((m, k), dtype=torch.int32),
            x.new_empty((m, e) if want_logits else (0,), dtype=_FP32))


def _compiled(x, norm_weight, gate_weight, eps, routing, correction_bias, normed_out, out_weights, out_ids,
              logits_out, packed):
    normed, *results = OP.custom_op(x, norm_weight, gate_weight, float(eps), routing.to_text(), correction_bias,
                                    packed, logits_out is not None)
    if normed_out is not None:
        normed = normed_out.copy_(normed)
    return (normed, *_as_tuple(router_topk.finish_traced(results, out_weights, out_ids, logits_out, packed)))


def _examples(preset, device):
    if not preset.norm_router:
        return []
    gate = torch.randn(preset.num_experts, preset.hidden_size, device=device).to(getattr(torch, preset.gate_dtype))
    norm_weight = torch.ones(preset.hidden_size, dtype=torch.bfloat16, device=device)
    cbias = torch.zeros(preset.num_experts, device=device) if preset.routing.correction_bias else None
    return [lambda m: (torch.randn(m, preset.hidden_size, device=device).to(torch.bfloat16), norm_weight, gate, 1e-6,
                       preset.routing, cbias, None, None, None, None, False)]


OP = tiers.add_op(tiers.Op("norm_router_topk", [
    tiers.Tier("cute-fused", _fused_eligible, max_rows=_kernel_max_rows, bind=_bind_fused),
    tiers.Tier("unfused", _unfused_eligible, _unfused),
    tiers.Tier("torch", lambda p: None, _torch),
], params=("x", "norm_weight", "gate_weight", tiers.Param("eps", 1e-6), tiers.Param("routing", None),
           tiers.Param("correction_bias", None), tiers.Param("normed_out", None), tiers.Param("out_weights", None),
           tiers.Param("out_ids", None), tiers.Param("logits_out", None), tiers.Param("packed", False)),
    outputs=("normed_out", "out_weights", "out_ids", "logits_out"), schema=SCHEMA, problem=NormRouterTopkProblem,
    key=problem_key, check=check_args, fake=_fake, examples=_examples, traced=(_impl, _compiled)))

_is_compiling = torch.compiler.is_compiling


def norm_router_topk(x: torch.Tensor, norm_weight: torch.Tensor, gate_weight: torch.Tensor, eps: float = 1e-6, *,
                     routing: RoutingConfig, correction_bias: torch.Tensor | None = None,
                     normed_out: torch.Tensor | None = None, out_weights: torch.Tensor | None = None,
                     out_ids: torch.Tensor | None = None, logits_out: torch.Tensor | None = None,
                     packed: bool = False):
    """RMSNorm then the routing step: ``(normed_x, weights, ids)``, or ``(normed_x, packed)``.

    x, norm_weight, gate_weight, eps, normed_out as ``norm_router_gemm``; the rest as
    ``router_topk``. Semantics: ``cute_kernels.reference.norm_router_topk``."""
    args = (x, norm_weight, gate_weight, eps, routing, correction_bias, normed_out, out_weights, out_ids, logits_out,
            bool(packed))
    if _is_compiling():
        return OP.compiled(*args)
    return OP.run(*args)
