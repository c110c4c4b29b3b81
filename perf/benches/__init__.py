"""Each op's benchmark, one module per op (a ``perf.bench.Bench`` named ``BENCH``), and the
registry the sweep reads; ``host_overhead`` times the eager host cost per call instead.

    python -m perf.benches OP [options]   # OP's sweep (= python perf/sweep.py --op OP), or host_overhead
"""

from perf.benches import norm_router_gemm, pack_topk, router_gemm, router_topk, silu_mul_quant_fp8

BENCHES = {b.op: b for b in (router_gemm.BENCH, router_topk.BENCH, norm_router_gemm.BENCH, silu_mul_quant_fp8.BENCH,
                             pack_topk.BENCH)}
