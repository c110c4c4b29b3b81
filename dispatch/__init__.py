"""The tier dispatcher: each call runs the best implementation that can run it, on any device.

Every op has an ordered list of tiers (a CuTe kernel first, plain torch last). Each tier has an
eligibility check that returns None or a one-line reason; the first eligible tier whose tuning
window contains M runs (``dispatch/tuning.json``, format in ``dispatch.tuning``). Decisions are
cached per problem (device, dtypes, sizes other than M, options, layout), so a call costs its
problem key, a dict lookup and an integer compare on M before the tier itself; a CuTe tier is
bound to the problem and checks only the call's outputs.

- ``router_gemm``, ``router_topk`` (the routing step: GEMM, scoring, top-k), ``norm_router_gemm``,
  ``norm_router_topk``, ``silu_mul_quant_fp8``, ``pack_topk``: the ``cute_kernels`` signatures and
  the spec's semantics (``cute_kernels.reference``).
- ``explain(op, *args, **kwargs)``: which tier would run and why each earlier one did not.
- ``force_tier(op, tier)`` (context manager) or ``CUTE_KERNELS_FORCE_TIER="router_gemm=torch"``;
  ``CUTE_KERNELS_LOG_DISPATCH=1`` logs each decision once. Both variables are read when a
  decision is made: after changing them, call ``clear_cache()``.
- ``register_tier`` / ``remove_tier``: add a kernel without editing this package
  (``op_signature(op)``: the positional arguments a tier's implementation takes).
- torch custom ops ``torch.ops.cute_kernels.*``: torch.compile (fullgraph) traces the public
  functions into them; the tier is chosen when the compiled graph runs.
- ``warmup(presets, m_values)``: load every kernel before CUDA-graph capture.
- ``GateLinear``, ``NormGateLinear``: drop-in gate modules (``nn.Linear`` state_dict layout).
- ``device_arch``: the arch the decisions see (``dispatch.environment.device_arch``, replaceable
  in tests to simulate a GPU).
- Inference only: a call whose inputs require grad while grad mode is on raises RuntimeError
  (every tier, eager and compiled); run under ``torch.no_grad()`` or ``torch.inference_mode()``.

Each op is declared in ``dispatch/ops/<op>.py`` on the template of ``dispatch.tiers.Op``.

Without the CuTe DSL (and no ahead-of-time kernel directory), on a pre-Hopper GPU or on CPU
tensors every op runs its torch tier, with the same semantics, and one ``RuntimeWarning`` per
reason; a CuTe kernel missing from the ahead-of-time directory drops that tier for the problem.
"""

from . import library, tuning
from .environment import device_arch
from .ops.norm_router_gemm import norm_router_gemm
from .ops.norm_router_topk import norm_router_topk
from .ops.pack_topk import pack_topk
from .ops.router_gemm import router_gemm
from .ops.router_topk import router_topk
from .ops.silu_mul_quant_fp8 import silu_mul_quant_fp8
from .modules import GateLinear, NormGateLinear
from .tiers import Explanation, Tier, clear_cache, explain, force_tier, op_signature, register_tier, remove_tier
from .preload import WarmupSummary, warmup

__all__ = [
    "Explanation", "GateLinear", "NormGateLinear", "Tier", "WarmupSummary", "clear_cache", "device_arch",
    "explain", "force_tier", "library", "norm_router_gemm", "norm_router_topk", "op_signature", "pack_topk",
    "register_tier", "remove_tier", "router_gemm", "router_topk", "silu_mul_quant_fp8", "tuning", "warmup",
]
