"""A small workload touching every kernel code path, run under compute-sanitizer (make sanitize).

Each case checks its result against the spec, so a sanitizer run also proves the code ran."""

import dataclasses

import torch

import cute_kernels
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import bridge, ops, reference
from cute_kernels.checks import dtype_name


def pack_topk_cases():
    for ids_dtype in (torch.int32, torch.int64):
        for weights_dtype in (torch.float32, torch.bfloat16):
            for t, k, offset in ((37, 8, 0), (5, 4, 0), (9, 6, 0), (7, 8, 2), (3, 8, 1), (11, 1, 0)):
                for pdl in (True, False):
                    n = t * k
                    ids = torch.randint(0, 256, (n + offset,), device="cuda").to(ids_dtype)[offset:].view(t, k)
                    w = torch.randn(n + offset, device="cuda").to(weights_dtype)[offset:].view(t, k)
                    out = torch.empty(n + offset, dtype=torch.int32, device="cuda")[offset:].view(t, k)
                    cute_kernels.pack_topk(ids, w, out=out, pdl=pdl)
                    assert torch.equal(out, reference.pack_topk(ids, w)), (ids_dtype, weights_dtype, t, k, offset)
                    yield


def silu_mul_quant_cases():
    """One launch per SiLU-quant code path; small T with a partial last CTA. Checked with the GPU
    tests' tolerances: scales within 1e-6 (ue8m0: equal), q within one e4m3 step, NaN alike."""
    paths = [  # (x dtype, T, H, group, ue8m0, scale_ub, layout, pdl)
        (torch.bfloat16, 37, 128, 128, False, None, "row", True),
        (torch.bfloat16, 5, 128, 64, False, None, "col", True),
        (torch.bfloat16, 3, 2048, 128, True, None, "row", False),
        (torch.bfloat16, 9, 2048, 64, True, 0.01, "col", True),
        (torch.bfloat16, 2, 7168, 128, False, 0.02, "row", True),
        (torch.float16, 11, 1536, 64, True, 1e-40, "col", False),
        (torch.float16, 1, 2048, 128, False, None, "row", True),
    ]
    for dtype, t, h, group, ue8m0, ub, layout, pdl in paths:
        x = (torch.randn(t, 2 * h, device="cuda") * 3).to(dtype)
        ub_t = None if ub is None else torch.tensor([ub], device="cuda")
        q, s = cute_kernels.silu_mul_quant_fp8(x, group, scale_ub=ub_t, ue8m0=ue8m0, scale_layout=layout, pdl=pdl)
        want_q, want_s = reference.silu_mul_quant_fp8(x, group, scale_ub=ub_t, ue8m0=ue8m0, scale_layout=layout)
        case = (dtype, t, h, group, ue8m0, ub, layout, pdl)
        rtol = 0.0 if ue8m0 else 1e-6
        assert torch.allclose(s, want_s, rtol=rtol, atol=0.0, equal_nan=True) and s.stride() == want_s.stride(), case
        gq, wq = q.double(), want_q.double()
        step = torch.exp2(torch.floor(torch.log2(torch.maximum(gq.abs(), wq.abs()).clamp_min(2.0**-6))) - 3)
        assert torch.equal(gq.isnan(), wq.isnan()), case
        assert ((gq - wq).abs() <= step)[~wq.isnan()].all(), case
        yield


def router_gemm_cases():
    """Each router variant once: dot, mma (its H split 8 ways across a cluster, and the same
    split through the global workspace), fp32 weights on both, bias, bf16 out, a partial expert
    tile, PDL off. fp32 out within 1e-5 (Frobenius), bf16 out 1e-2."""
    f32, bf16 = torch.float32, torch.bfloat16
    paths = [  # (x, weight, out, bias, M, H, E, variant, pdl); variant "global": mma through the workspace
        (bf16, bf16, f32, None, 1, 7168, 256, "dot", True),
        (bf16, bf16, f32, None, 16, 7168, 256, "mma", True),
        (bf16, bf16, f32, None, 64, 7168, 256, "global", True),
        (bf16, f32, f32, None, 3, 3072, 256, "dot", False),
        (bf16, f32, bf16, f32, 33, 3072, 200, "mma", True),
        (bf16, bf16, bf16, bf16, 5, 2880, 128, "mma", True),
        (f32, f32, bf16, f32, 9, 64, 7, "dot", True),
        (bf16, bf16, f32, None, 130, 1024, 40, "mma", False),
        (bf16, bf16, bf16, bf16, 2, 2880, 32, "dot", True),
    ]
    for x_dtype, w_dtype, out_dtype, b_dtype, m, h, e, variant, pdl in paths:
        x = torch.randn(m, h, device="cuda").to(x_dtype)
        w = torch.randn(e, h, device="cuda").to(w_dtype)
        b = None if b_dtype is None else torch.randn(e, device="cuda").to(b_dtype)
        config = None
        if variant == "global":
            names = [dtype_name(d) for d in (x_dtype, w_dtype, out_dtype)]
            default = router_tiling.pick(*names, None, m, h, e, "mma", pdl)
            variant, config = "mma", dataclasses.replace(default, reduce="global")
        got = cute_kernels.router_gemm(x, w, b, out_dtype=out_dtype, variant=variant, pdl=pdl, config=config).double()
        want = reference.router_gemm(x, w, b).double()
        err = (torch.linalg.norm(got - want) / torch.linalg.norm(want)).item()
        assert err <= (1e-5 if out_dtype == f32 else 1e-2), (x_dtype, w_dtype, out_dtype, m, h, e, variant, err)
        yield


def norm_router_cases():
    """The fused RMSNorm + router: the dot variant at M = 1, the tensor-core variant with an 8-CTA
    cluster at M = 16, mixed dtypes with bf16 logits, and no cluster (tiny H, partial expert
    tile). Relative Frobenius error: normed_x 1e-2 (its own 16-bit rounding), logits 1e-5
    (fp32) or 1e-2 (bf16)."""
    f32, bf16, f16 = torch.float32, torch.bfloat16, torch.float16
    paths = [  # (x, norm weight, gate, out, M, H, E, pdl)
        (bf16, bf16, bf16, f32, 1, 7168, 384, True),
        (bf16, bf16, bf16, f32, 16, 7168, 384, True),
        (f16, f32, f32, bf16, 3, 3072, 256, False),
        (bf16, bf16, bf16, f32, 5, 64, 5, True),
    ]
    for x_dtype, n_dtype, g_dtype, out_dtype, m, h, e, pdl in paths:
        x = torch.randn(m, h, device="cuda").to(x_dtype)
        nw = (1 + 0.1 * torch.randn(h, device="cuda")).to(n_dtype)
        gate = torch.randn(e, h, device="cuda").to(g_dtype)
        normed, logits = cute_kernels.norm_router_gemm(x, nw, gate, out_dtype=out_dtype, pdl=pdl)
        want_n, want_l = reference.norm_router_gemm(x, nw, gate)
        case = (x_dtype, n_dtype, g_dtype, out_dtype, m, h, e, pdl)
        for got, want, tol in ((normed, want_n, 1e-2), (logits, want_l, 1e-5 if out_dtype == f32 else 1e-2)):
            err = (torch.linalg.norm(got.double() - want.double()) / torch.linalg.norm(want.double())).item()
            assert err <= tol, (case, err)
        yield


def router_topk_cases():
    """The routing step: the fused kernel on the dot variant (grouped sigmoid with a correction
    bias), the tensor-core variant across a cluster (packed output), a softmax routing with a
    partial expert tile and the gpt-oss bias, the fused norm-router with DeepSeek-V4's routing,
    and the route kernel alone; each against the spec's routing of the kernel's own logits."""
    from cute_kernels import presets
    from cute_kernels.routing import RoutingConfig

    paths = [  # (H, E, M, routing, gate bias, packed, pdl)
        (7168, 256, 1, presets.get("deepseek-v3").routing, False, False, True),
        (7168, 256, 16, presets.get("deepseek-v3").routing, False, True, True),
        (2880, 128, 5, presets.get("gpt-oss-120b").routing, True, False, False),
        (1024, 100, 33, RoutingConfig("softmax", 8, renormalize=True), False, False, True),
    ]
    for h, e, m, routing, has_bias, packed, pdl in paths:
        x = torch.randn(m, h, device="cuda").to(torch.bfloat16)
        w = (torch.randn(e, h, device="cuda") / h**0.5).to(torch.bfloat16)
        b = torch.randn(e, device="cuda").to(torch.bfloat16) if has_bias else None
        cb = torch.randn(e, device="cuda") * 0.1 if routing.correction_bias else None
        logits = torch.full((m, e), float("nan"), device="cuda")
        got = cute_kernels.router_topk(x, w, b, routing=routing, correction_bias=cb, logits_out=logits, packed=packed,
                                       pdl=pdl)
        want_w, want_ids = reference.route(logits, routing, cb)
        if packed:
            assert torch.equal(got >> 16, want_ids), (h, e, m)
        else:
            assert torch.equal(got[1], want_ids) and torch.allclose(got[0], want_w, rtol=1e-6), (h, e, m)
        yield
    v4 = presets.get("deepseek-v4-pro")
    x = torch.randn(3, 7168, device="cuda").to(torch.bfloat16)
    nw, gate = torch.ones(7168, device="cuda").to(torch.bfloat16), (torch.randn(384, 7168, device="cuda") / 85).to(
        torch.bfloat16)
    cb = torch.randn(384, device="cuda") * 0.1
    logits = torch.empty(3, 384, device="cuda")
    _, weights, ids = cute_kernels.norm_router_topk(x, nw, gate, routing=v4.routing, correction_bias=cb,
                                                    logits_out=logits)
    assert torch.equal(ids, reference.route(logits, v4.routing, cb)[1])
    yield
    weights, ids = cute_kernels.route(logits, routing=v4.routing, correction_bias=cb)
    assert torch.equal(ids, reference.route(logits, v4.routing, cb)[1])
    yield


if __name__ == "__main__":
    n = sum(1 for _ in pack_topk_cases())
    m = sum(1 for _ in silu_mul_quant_cases())
    r = sum(1 for _ in router_gemm_cases())
    f = sum(1 for _ in norm_router_cases())
    s = sum(1 for _ in router_topk_cases())
    torch.cuda.synchronize()
    print(f"sanitizer workload: {n} pack_topk, {m} silu_mul_quant_fp8, {r} router_gemm, {f} norm_router_gemm and {s} "
          "routing-step launches checked")
