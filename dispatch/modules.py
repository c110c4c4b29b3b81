"""Drop-in torch modules for MoE gates, running on the dispatched ops (inference only: the CuTe
tiers record no autograd graph, so parameters are created with ``requires_grad=False``).

``GateLinear`` has ``nn.Linear``'s state_dict layout (``weight`` [E, H], ``bias`` [E]), so a
checkpoint's gate loads unchanged; with a ``routing`` config it returns each token's top-k
(weights, ids) instead of logits, and a routing with a correction bias adds the fp32 buffer
``e_score_correction_bias`` [E] under the name DeepSeek-style checkpoints use. ``NormGateLinear`` holds its RMSNorm weight in a ``norm``
submodule (an ``nn.RMSNorm``) and its gate in a ``gate`` submodule (a ``GateLinear``): keys
``norm.weight`` and ``gate.weight``, the layout of an ``nn.RMSNorm`` followed by an
``nn.Linear``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cute_kernels.routing import RoutingConfig

from .ops import router_topk as topk_op
from .ops.norm_router_gemm import norm_router_gemm
from .ops.norm_router_topk import norm_router_topk
from .ops.router_gemm import router_gemm
from .ops.router_topk import router_topk


class GateLinear(nn.Module):
    """Router logits ``x @ weight.T (+ bias)`` in ``out_dtype``, with an optional LoRA adapter;
    with ``routing`` (a ``RoutingConfig``, e.g. a preset's) the routing step instead: each
    token's top-k ``(weights fp32, ids int32)`` (``dispatch.router_topk``).

    With an adapter (``add_lora``) the base GEMM still runs on the fast tier (in fp32 out), then
    ``scaling * (x @ A.T) @ B.T`` is added in fp32, and the sum is rounded once to
    ``out_dtype`` (or routed). Both adapter products go through the router GEMM dispatch too
    (fp32, no TF32).
    """

    def __init__(self, hidden_size: int, num_experts: int, bias: bool = False,
                 params_dtype: torch.dtype = torch.bfloat16, out_dtype: torch.dtype = torch.float32,
                 device=None, lora_rank: int = 0, lora_scaling: float = 1.0, routing: RoutingConfig | None = None):
        super().__init__()
        if routing is not None:
            if not isinstance(routing, RoutingConfig):
                raise TypeError(f"routing must be a cute_kernels.routing.RoutingConfig; got {type(routing).__name__}")
            routing.check(num_experts)
        self.hidden_size, self.num_experts, self.out_dtype, self.routing = hidden_size, num_experts, out_dtype, routing
        if routing is not None and routing.correction_bias:
            self.register_buffer("e_score_correction_bias", torch.zeros(num_experts, dtype=torch.float32,
                                                                        device=device))
        else:
            self.e_score_correction_bias = None
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size, dtype=params_dtype, device=device),
                                   requires_grad=False)
        if bias:
            self.bias = nn.Parameter(torch.empty(num_experts, dtype=params_dtype, device=device), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self.register_parameter("lora_A", None)
        self.register_parameter("lora_B", None)
        self.lora_scaling = 0.0
        self.reset_parameters()
        if lora_rank:
            self.add_lora(torch.zeros(lora_rank, hidden_size, dtype=params_dtype, device=device),
                          torch.zeros(num_experts, lora_rank, dtype=params_dtype, device=device), lora_scaling)

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation, so a fresh gate behaves like a fresh nn.Linear."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def add_lora(self, A: torch.Tensor, B: torch.Tensor, scaling: float) -> None:
        """Sets (or replaces) the adapter: A [r, H], B [E, r]; state_dict keys ``lora_A``, ``lora_B``."""
        r = A.shape[0]
        if A.dim() != 2 or B.dim() != 2 or A.shape[1] != self.hidden_size or tuple(B.shape) != (self.num_experts, r):
            raise ValueError(f"LoRA A must be [r, {self.hidden_size}] and B [{self.num_experts}, r]; got "
                             f"{tuple(A.shape)} and {tuple(B.shape)}")
        self.lora_A = nn.Parameter(A.detach().clone(), requires_grad=False)
        self.lora_B = nn.Parameter(B.detach().clone(), requires_grad=False)
        self.lora_scaling = float(scaling)

    def forward(self, x: torch.Tensor):
        """x [..., H] -> logits [..., E], or with a routing (weights [..., k], ids [..., k])."""
        if x.dim() != 2:
            out = self(x.reshape(-1, self.hidden_size))
            if self.routing is None:
                return out.view(*x.shape[:-1], self.num_experts)
            return tuple(t.view(*x.shape[:-1], self.routing.top_k) for t in out)
        cbias = self.e_score_correction_bias
        if self.lora_A is None:
            if self.routing is not None:
                return router_topk(x, self.weight, self.bias, routing=self.routing, correction_bias=cbias)
            return router_gemm(x, self.weight, self.bias, out_dtype=self.out_dtype)
        logits = router_gemm(x, self.weight, self.bias, out_dtype=torch.float32)
        delta = router_gemm(router_gemm(x, self.lora_A), self.lora_B)
        logits = logits + self.lora_scaling * delta
        if self.routing is not None:
            return topk_op.route(logits, self.routing, cbias, None, None, False,
                                 topk_op.route_eligible(logits.device, self.routing, self.num_experts) is None)
        return logits.to(self.out_dtype)

    def extra_repr(self) -> str:
        lora = "" if self.lora_A is None else f", lora_rank={self.lora_A.shape[0]}, lora_scaling={self.lora_scaling}"
        routing = "" if self.routing is None else f", routing={self.routing.to_text()}"
        return (f"hidden_size={self.hidden_size}, num_experts={self.num_experts}, bias={self.bias is not None}, "
                f"params_dtype={self.weight.dtype}, out_dtype={self.out_dtype}{lora}{routing}")


class NormGateLinear(nn.Module):
    """RMSNorm fused with the gate: ``forward(x) -> (normed_x, logits)``, or with ``routing``
    ``(normed_x, weights, ids)`` (``dispatch.norm_router_topk``; the gate holds the correction
    bias buffer, key ``gate.e_score_correction_bias``).

    normed_x is x's dtype (what the experts read), logits ``out_dtype`` from the unrounded normed
    rows (``cute_kernels.reference.norm_router_gemm``)."""

    def __init__(self, hidden_size: int, num_experts: int, eps: float = 1e-6,
                 params_dtype: torch.dtype = torch.bfloat16, gate_dtype: torch.dtype = torch.bfloat16,
                 out_dtype: torch.dtype = torch.float32, device=None, routing: RoutingConfig | None = None):
        super().__init__()
        self.norm = nn.RMSNorm(hidden_size, eps=eps, dtype=params_dtype, device=device).requires_grad_(False)
        self.gate = GateLinear(hidden_size, num_experts, params_dtype=gate_dtype, out_dtype=out_dtype, device=device,
                               routing=routing)

    def forward(self, x: torch.Tensor):
        """x [..., H] -> (normed_x [..., H], logits [..., E]), or (normed_x, weights [..., k], ids [..., k])."""
        if x.dim() != 2:
            normed, *rest = self(x.reshape(-1, x.shape[-1]))
            return (normed.view(x.shape), *(t.view(*x.shape[:-1], t.shape[-1]) for t in rest))
        if self.gate.routing is not None:
            return norm_router_topk(x, self.norm.weight, self.gate.weight, self.norm.eps, routing=self.gate.routing,
                                    correction_bias=self.gate.e_score_correction_bias)
        return norm_router_gemm(x, self.norm.weight, self.gate.weight, self.norm.eps,
                                out_dtype=self.gate.out_dtype)
