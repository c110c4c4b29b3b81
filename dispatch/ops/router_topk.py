"""The routing step: router GEMM, scoring and top-k, as ``cute_kernels.reference.router_topk``:
``(weights fp32 [M, k], ids int32 [M, k])``, or the packed int32 [M, k] of ``pack_topk``.

Tiers, in order: ``cute-fused`` (``cute_kernels.router_topk``, one kernel), ``unfused`` (the
router GEMM dispatch into fp32 logits, then ``cute_kernels.route``: two kernels), ``torch`` (fp32
logits in torch, then the spec's routing).

The problem (``RouterTopkProblem``): ``device``, ``x_dtype``, ``weight_dtype``, ``bias`` (None or
``(dtype, shape)``), ``hidden`` (H), ``weight_shape`` ([E, H]), ``routing`` (the
``RoutingConfig``), ``correction_bias`` (None or ``(dtype, shape)``), ``packed``, ``dense`` (x and
weight contiguous and 16-byte aligned, every other tensor contiguous, logits_out 16-byte
aligned), ``same_device`` and ``needs_grad``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cute_kernels import ops as kernel_ops
from cute_kernels import reference as spec
from cute_kernels.checks import check_tensor, dtype_name, require
from cute_kernels.kernels import router_gemm as family
from cute_kernels.routing import RoutingConfig

from .. import environment, tiers
from ..torch_math import check_devices, check_out, dense, linear_fp32, same_device
from . import router_gemm

_FP32 = torch.float32


class RouterTopkProblem(NamedTuple):
    device: torch.device
    x_dtype: torch.dtype
    weight_dtype: torch.dtype
    bias: tuple | None
    hidden: int
    weight_shape: torch.Size
    routing: RoutingConfig
    correction_bias: tuple | None
    packed: bool
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
                              None if self.bias is None else dtype_name(self.bias[0]), "float32", self.hidden,
                              self.experts)

    def describe(self, m: int | None) -> str:
        r = self.routing
        return (f"x {dtype_name(self.x_dtype)} [{'M' if m is None else m}, {self.hidden}], weight "
                f"{dtype_name(self.weight_dtype)} {list(self.weight_shape)}{', bias' if self.bias else ''}, "
                f"{r.scoring} top-{r.top_k}" + (f" of {r.topk_group}/{r.n_group} groups" if r.n_group > 1 else "")
                + (", correction bias" if r.correction_bias else "") + (", packed" if self.packed else "")
                + f"{'' if self.dense else ' (not dense)'} on {self.device} ({tiers.problem_arch(self) or 'no GPU arch'})")


def _spec(t):
    return None if t is None else (t.dtype, t.shape)


def problem_key(x, weight, bias, routing, correction_bias, out_weights, out_ids, logits_out, packed):
    m, hidden = x.shape
    device = x.device
    is_dense = (x.is_contiguous() and weight.is_contiguous() and not (x.data_ptr() | weight.data_ptr()) % 16
                and (bias is None or bias.is_contiguous())
                and (correction_bias is None or correction_bias.is_contiguous())
                and (out_weights is None or out_weights.is_contiguous()) and (out_ids is None or out_ids.is_contiguous())
                and (logits_out is None or dense(logits_out)))
    key = (device, x.dtype, weight.dtype, _spec(bias), hidden, weight.shape, routing, _spec(correction_bias),
           packed, is_dense,
           weight.device == device and same_device(device, bias, correction_bias, out_weights, out_ids, logits_out),
           tiers.needs_grad(x, weight, bias))
    return key, m


def check_routing(routing, experts: int, correction_bias) -> None:
    """The routing config and its correction bias, as the spec checks them."""
    require(isinstance(routing, RoutingConfig), f"routing must be a cute_kernels.routing.RoutingConfig; got "
                                                f"{type(routing).__name__}", TypeError)
    routing.check(int(experts))  # under torch.compile E may be symbolic: the selection specialises on it
    if routing.correction_bias:
        require(correction_bias is not None, "correction_bias is required: routing.correction_bias is True")
        check_tensor("correction_bias", correction_bias, (_FP32,), (experts,))
    else:
        require(correction_bias is None, "correction_bias was given, but routing.correction_bias is False")


def check_selection_outputs(m: int, k: int, experts: int, out_weights, out_ids, logits_out, packed) -> None:
    if packed:
        require(out_weights is None, "out_weights was given, but packed=True returns one int32 tensor (out_ids)")
    if out_weights is not None:
        check_out("out_weights", out_weights, (m, k), _FP32)
    if out_ids is not None:
        check_out("out_ids", out_ids, (m, k), torch.int32)
    if logits_out is not None:
        check_out("logits_out", logits_out, (m, experts), _FP32)


def check_args(x, weight, bias, routing, correction_bias, out_weights, out_ids, logits_out, packed) -> None:
    check_tensor("x", x, router_gemm.X_DTYPES, (None, None))
    check_tensor("weight", weight, router_gemm.WEIGHT_DTYPES, (None, x.shape[1]))
    if bias is not None:
        check_tensor("bias", bias, router_gemm.BIAS_DTYPES, (weight.shape[0],))
    check_routing(routing, weight.shape[0], correction_bias)
    check_selection_outputs(x.shape[0], routing.top_k, weight.shape[0], out_weights, out_ids, logits_out, packed)
    check_devices("x", x, weight=weight, bias=bias, correction_bias=correction_bias, out_weights=out_weights,
                  out_ids=out_ids, logits_out=logits_out)


def finish_selection(weights, ids, out_weights, out_ids, packed):
    """The spec's (weights, ids) as the op returns them: packed or not, into given outputs."""
    if packed:
        result = spec.pack_topk(ids, weights)
        return result if out_ids is None else out_ids.copy_(result)
    if out_weights is not None:
        weights = out_weights.copy_(weights)
    if out_ids is not None:
        ids = out_ids.copy_(ids)
    return weights, ids


def route_eligible(device, routing, experts: int) -> str | None:
    """Whether ``cute_kernels.route`` can choose on ``device``."""
    return family.tiling.supports_selection(routing, experts) or environment.cute_unavailable(device)


def route(logits, routing, correction_bias, out_weights, out_ids, packed, use_kernel: bool):
    """The selection step of the unfused tiers: the route kernel, or the spec."""
    if use_kernel:
        return kernel_ops.route(logits, routing=routing, correction_bias=correction_bias, out_weights=out_weights,
                                out_ids=out_ids, packed=packed)
    weights, ids = spec.route(logits, routing, correction_bias)
    return finish_selection(weights, ids, out_weights, out_ids, packed)


# -- tiers ---------------------------------------------------------------------------------------
def _fused_eligible(p: RouterTopkProblem) -> str | None:
    if why := family.supports(p.kernel_problem()) or family.tiling.supports_selection(p.routing, p.experts):
        return why
    if not p.dense:
        return "x and weight must be contiguous and 16-byte aligned, the other tensors contiguous"
    return environment.cute_unavailable(p.device)


def _bind_fused(p: RouterTopkProblem):
    launch = kernel_ops.router_topk_launcher(p.x_dtype, p.weight_dtype, None if p.bias is None else p.bias[0],
                                             p.hidden, p.experts, p.routing, p.packed, p.device, True)
    return lambda m, x, weight, bias, routing, cbias, ow, oi, lo, packed: launch(m, x, weight, bias, cbias, ow, oi, lo)


def _unfused_eligible(p: RouterTopkProblem) -> str | None:
    return route_eligible(p.device, p.routing, p.experts)


def _unfused(x, weight, bias, routing, correction_bias, out_weights, out_ids, logits_out, packed):
    logits = router_gemm.OP.run(x, weight, bias, _FP32, logits_out)
    return route(logits, routing, correction_bias, out_weights, out_ids, packed, True)


def _torch(x, weight, bias, routing, correction_bias, out_weights, out_ids, logits_out, packed):
    logits = linear_fp32(x, weight, bias)
    if logits_out is not None:
        logits = logits_out.copy_(logits)
    return route(logits, routing, correction_bias, out_weights, out_ids, packed, False)


def _kernel_max_rows(p: RouterTopkProblem) -> int:
    return family.max_rows(p.hidden, p.experts)


# -- torch.compile: the routing config travels as text; the op returns the logits it was asked for
SCHEMA = ("(Tensor x, Tensor weight, Tensor? bias, str routing, Tensor? correction_bias, bool packed, "
          "bool want_logits) -> (Tensor, Tensor, Tensor)")


def selection_results(result, packed, logits, like):
    """(weights or an empty tensor, ids or the packed values, logits or an empty tensor)."""
    weights, ids = (like.new_empty(0, dtype=_FP32), result) if packed else result
    return weights, ids, logits if logits is not None else like.new_empty(0, dtype=_FP32)


def _impl(x, weight, bias, routing, correction_bias, packed, want_logits):
    logits = x.new_empty(x.shape[0], weight.shape[0], dtype=_FP32) if want_logits else None
    result = OP.run(x, weight, bias, RoutingConfig.from_text(routing), correction_bias, None, None, logits, packed)
    return selection_results(result, packed, logits, x)


def _fake(x, weight, bias, routing, correction_bias, packed, want_logits):
    routing = RoutingConfig.from_text(routing)
    check_args(x, weight, bias, routing, correction_bias, None, None, None, packed)
    m, k, e = x.shape[0], routing.top_k, weight.shape[0]
    ids = x.new_empty((m, k), dtype=torch.int32)
    weights = x.new_empty((0,) if packed else (m, k), dtype=_FP32)
    return weights, ids, x.new_empty((m, e) if want_logits else (0,), dtype=_FP32)


def finish_traced(results, out_weights, out_ids, logits_out, packed):
    weights, ids, logits = results
    if logits_out is not None:
        logits_out.copy_(logits)
    if packed:
        return ids if out_ids is None else out_ids.copy_(ids)
    return (weights if out_weights is None else out_weights.copy_(weights),
            ids if out_ids is None else out_ids.copy_(ids))


def _compiled(x, weight, bias, routing, correction_bias, out_weights, out_ids, logits_out, packed):
    results = OP.custom_op(x, weight, bias, routing.to_text(), correction_bias, packed, logits_out is not None)
    return finish_traced(results, out_weights, out_ids, logits_out, packed)


def _examples(preset, device):
    weight = torch.randn(preset.num_experts, preset.hidden_size, device=device).to(getattr(torch, preset.gate_dtype))
    bias = torch.randn(preset.num_experts, device=device).to(weight.dtype) if preset.gate_bias else None
    cbias = torch.zeros(preset.num_experts, device=device) if preset.routing.correction_bias else None
    return [lambda m: (torch.randn(m, preset.hidden_size, device=device).to(torch.bfloat16), weight, bias,
                       preset.routing, cbias, None, None, None, False)]


OP = tiers.add_op(tiers.Op("router_topk", [
    tiers.Tier("cute-fused", _fused_eligible, max_rows=_kernel_max_rows, bind=_bind_fused),
    tiers.Tier("unfused", _unfused_eligible, _unfused),
    tiers.Tier("torch", lambda p: None, _torch),
], params=("x", "weight", tiers.Param("bias", None), tiers.Param("routing", None),
           tiers.Param("correction_bias", None), tiers.Param("out_weights", None), tiers.Param("out_ids", None),
           tiers.Param("logits_out", None), tiers.Param("packed", False)),
    outputs=("out_weights", "out_ids", "logits_out"), schema=SCHEMA, problem=RouterTopkProblem, key=problem_key,
    check=check_args, fake=_fake, examples=_examples, traced=(_impl, _compiled)))

_is_compiling = torch.compiler.is_compiling


def router_topk(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, routing: RoutingConfig,
                correction_bias: torch.Tensor | None = None, out_weights: torch.Tensor | None = None,
                out_ids: torch.Tensor | None = None, logits_out: torch.Tensor | None = None, packed: bool = False):
    """The routing step, x -> each token's top-k experts: ``(weights fp32 [M, k], ids int32
    [M, k])``, or with ``packed=True`` the int32 [M, k] of ``pack_topk`` (into ``out_ids``).

    x [M, H], weight [E, H], bias [E] (the gate's own, part of the logits) as ``router_gemm``;
    ``routing`` a ``RoutingConfig`` (``cute_kernels.presets.get(name).routing``);
    ``correction_bias`` fp32 [E], given exactly when ``routing.correction_bias``; ``logits_out``
    fp32 [M, E], written only when given. Semantics: ``cute_kernels.reference.router_topk``."""
    args = (x, weight, bias, routing, correction_bias, out_weights, out_ids, logits_out, bool(packed))
    if _is_compiling():
        return OP.compiled(*args)
    return OP.run(*args)
