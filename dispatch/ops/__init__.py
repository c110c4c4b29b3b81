"""The dispatched ops, one module each (named as the op): its declaration (``OP``, a
``dispatch.tiers.Op``) and its public function, which ``dispatch`` exports. Importing this
package registers them all."""

# In the order a MoE layer runs them (warmup and listings follow it).
from . import router_gemm, router_topk, norm_router_gemm, norm_router_topk, silu_mul_quant_fp8, pack_topk  # noqa: F401, I001
