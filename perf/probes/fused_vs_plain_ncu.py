"""Nsight Compute workload: the fused RMSNorm + router and the plain router on the same shape
(DeepSeek-V4-Pro 7168 x 384, bf16, M = 16 or the first argument), each launched once inside an
NVTX range "probe":
    ncu --clock-control none --set full --nvtx --nvtx-include "probe/" -k regex:kernel_cutlass \\
        -o fused python -m perf.probes.fused_vs_plain_ncu
then ncu_csv_summary.py over the report's CSV pages.
"""
import sys
import torch
import cute_kernels

dev = torch.device("cuda")
M, H, E = int(sys.argv[1]) if len(sys.argv) > 1 else 16, 7168, 384
x = torch.randn(M, H, device=dev, dtype=torch.bfloat16)
nw = torch.randn(H, device=dev, dtype=torch.bfloat16)
w = torch.randn(E, H, device=dev, dtype=torch.bfloat16)
calls = [lambda: cute_kernels.norm_router_gemm(x, nw, w), lambda: cute_kernels.router_gemm(x, w, variant="mma")]
for call in calls:
    call()  # compile and load outside the range
torch.cuda.synchronize()
for call in calls:
    torch.cuda.nvtx.range_push("probe")
    call()
    torch.cuda.nvtx.range_pop()
    torch.cuda.synchronize()
