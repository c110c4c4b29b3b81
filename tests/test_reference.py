"""CPU tests of cute_kernels.reference against independent float64 formulas.

The expected values are written differently from the reference on purpose: plain Python
floats, math.fsum and explicit loops over small shapes, never the reference's torch code.
Each test seeds its own generator, so every exact-equality check is deterministic.
"""

import math
import struct

import pytest
import torch

from cute_kernels import reference as R

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def rand(shape, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def ulp(v, dtype):
    """Spacing of `dtype` at |v| (smallest normal spacing below the normal range)."""
    mant, tiny = {FP32: (23, 2.0**-126), BF16: (7, 2.0**-126), FP16: (10, 2.0**-14)}[dtype]
    return 2.0 ** (math.frexp(max(abs(v), tiny))[1] - 1 - mant)


def as_dtype(v, dtype):
    return torch.tensor(v, dtype=torch.float64).to(dtype).item()


# ---------------------------------------------------------------- router_gemm

@pytest.mark.parametrize("M,H,E", [(0, 16, 8), (1, 7, 3), (5, 33, 9), (3, 128, 16)])
@pytest.mark.parametrize("xdt,wdt", [(BF16, BF16), (FP16, FP32), (FP32, FP32), (BF16, FP32)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("out_dtype", [FP32, BF16])
def test_router_gemm(M, H, E, xdt, wdt, with_bias, out_dtype):
    x, w = rand((M, H), xdt, 1), rand((E, H), wdt, 2, 0.1)
    b = rand((E,), FP32, 3) if with_bias else None
    got = R.router_gemm(x, w, b, out_dtype=out_dtype)
    assert got.shape == (M, E) and got.dtype == out_dtype
    for m in range(M):
        for e in range(E):
            terms = [x[m, h].item() * w[e, h].item() for h in range(H)]
            exact = math.fsum(terms + ([b[e].item()] if b is not None else []))
            # Exact equality: products are exact in float64 and fsum is exact, so the two agree
            # unless the sum sits within ~H*2**-53 of a rounding boundary (not for these seeds).
            assert got[m, e].item() == as_dtype(exact, out_dtype)


def test_router_gemm_keeps_fp32_weights():
    w = torch.full((2, 4), 1.0 + 2.0**-20, dtype=FP32)  # not representable in bf16
    assert w.to(BF16).float()[0, 0].item() == 1.0
    x = torch.ones((1, 4), dtype=BF16)
    got = R.router_gemm(x, w)
    assert got[0, 0].item() == 4.0 * (1.0 + 2.0**-20)  # exact in fp32
    assert not torch.equal(got, R.router_gemm(x, w.to(BF16)))


# ---------------------------------------------------------------- norm_router_gemm

@pytest.mark.parametrize("M,H,E", [(0, 64, 8), (1, 5, 3), (4, 96, 7)])
@pytest.mark.parametrize("xdt", [BF16, FP16])
@pytest.mark.parametrize("gdt", [BF16, FP32])
@pytest.mark.parametrize("out_dtype", [FP32, BF16])
def test_norm_router_gemm(M, H, E, xdt, gdt, out_dtype):
    eps = 1e-6
    x, nw, gw = rand((M, H), xdt, 4, 2.0), rand((H,), BF16, 5), rand((E, H), gdt, 6, 0.1)
    normed, logits = R.norm_router_gemm(x, nw, gw, eps=eps, out_dtype=out_dtype)
    assert normed.shape == (M, H) and normed.dtype == xdt
    assert logits.shape == (M, E) and logits.dtype == out_dtype
    for m in range(M):
        row = [x[m, h].item() for h in range(H)]
        r = 1.0 / math.sqrt(math.fsum(v * v for v in row) / H + eps)
        n = [row[h] * r * nw[h].item() for h in range(H)]
        for h in range(H):
            # Within 1 ulp of x's dtype: our n differs from the reference's float64 n by a few
            # float64 ulps, which can only flip a rounding that sits on a boundary.
            assert abs(normed[m, h].item() - n[h]) <= ulp(n[h], xdt)
        for e in range(E):
            exact = math.fsum(n[h] * gw[e, h].item() for h in range(H))
            # 1 ulp of out_dtype, for the same reason (n is only float64-accurate).
            assert abs(logits[m, e].item() - exact) <= ulp(exact, out_dtype)


def test_rmsnorm_logits_use_unrounded_normed_x():
    x, nw, gw = rand((4, 256), BF16, 7), rand((256,), BF16, 8), rand((16, 256), FP32, 9)
    normed, logits = R.norm_router_gemm(x, nw, gw)
    from_rounded = R.router_gemm(normed, gw)
    # bf16 rounding of normed_x (2**-9 relative) moves the logits by far more than 1 fp32 ulp.
    assert not torch.equal(logits, from_rounded)
    # ...yet stays close: bf16 errors (2**-9 relative) partly cancel over H terms; 1% of the
    # largest logit is a loose bound on the sum of those errors.
    assert (logits - from_rounded).abs().max() < 0.01 * logits.abs().max()


# ---------------------------------------------------------------- silu_mul_quant_fp8

def y64(x):
    """SiLU(gate) * up in float64 Python arithmetic, as nested lists."""
    H = x.shape[1] // 2
    rows = x.double().tolist()
    out = []
    for r in rows:
        out.append([])
        for g, u in zip(r[:H], r[H:]):
            s = g / (1.0 + math.exp(-g)) if g > -700 else 0.0
            out[-1].append(s * u)
    return out


def plain_scale64(vals):
    if any(math.isnan(v) for v in vals):
        return math.nan
    return max(max(abs(v) for v in vals), 1e-10) / 448.0


@pytest.mark.parametrize("T,H,gs", [(0, 128, 128), (1, 64, 64), (3, 256, 128), (5, 192, 64)])
@pytest.mark.parametrize("xdt", [BF16, FP16])
def test_silu_quant_scales_and_values(T, H, gs, xdt):
    x = rand((T, 2 * H), xdt, 10, 3.0)
    q, s = R.silu_mul_quant_fp8(x, group_size=gs)
    assert q.shape == (T, H) and q.dtype == torch.float8_e4m3fn
    assert s.shape == (T, H // gs) and s.dtype == FP32 and s.is_contiguous()
    y = y64(x)
    deq = R.dequantize_fp8(q, s, gs)
    for t in range(T):
        for j in range(H // gs):
            group = y[t][j * gs:(j + 1) * gs]
            want = plain_scale64(group)
            # 1e-6 relative: the reference's y is fp32 (a few 2**-24 ulps from the float64 y),
            # so its amax, and amax / 448, carry the same few-ulp error.
            assert abs(s[t, j].item() - want) <= 1e-6 * want
            sc = s[t, j].item()
            for i, v in enumerate(group):
                d = deq[t, j * gs + i].item()
                # Half an e4m3 step (round to nearest, so well within one step): the step at
                # |v / scale| is 2**(exponent - 3), 2**-9 in the subnormal range; plus 1e-6
                # relative for the fp32 y the reference rounds from.
                step = 2.0 ** (max(math.frexp(abs(v) / sc)[1] - 1, -6) - 3) * sc
                assert abs(d - v) <= 0.5 * step + 1e-6 * abs(v)


@pytest.mark.parametrize("gs", [64, 128])
def test_silu_quant_ue8m0(gs):
    x = rand((4, 4 * gs), BF16, 11, 2.0)
    _, plain = R.silu_mul_quant_fp8(x, group_size=gs)
    _, pow2 = R.silu_mul_quant_fp8(x, group_size=gs, ue8m0=True)
    for p, s in zip(plain.flatten().tolist(), pow2.flatten().tolist()):
        assert math.frexp(s)[0] == 0.5  # an exact power of two
        assert p <= s < 2 * p
    # A power-of-two scale_ub that clamps every group must come through unchanged.
    ub = torch.tensor(2.0**-12, dtype=FP32)
    _, s = R.silu_mul_quant_fp8(x, group_size=gs, scale_ub=ub, ue8m0=True)
    assert (s == 2.0**-12).all()


def test_silu_quant_zero_group_ub_saturation_nan():
    T, H, gs = 3, 256, 128
    x = rand((T, 2 * H), BF16, 12, 4.0)
    x[1, :gs] = 0.0  # row 1, group 0: gate all zero -> y all zero
    x[2, H + 130] = float("nan")  # row 2, group 1: one NaN in up
    q, s = R.silu_mul_quant_fp8(x, group_size=gs)
    floor = struct.unpack("f", struct.pack("f", 1e-10))[0] / 448.0  # fp32(1e-10) / 448
    assert s[1, 0].item() == as_dtype(floor, FP32)
    assert (q[1, :gs].float() == 0).all()
    assert math.isnan(s[2, 1].item()) and math.isnan(q[2, 130].float().item())
    assert torch.isfinite(s[:2]).all() and torch.isfinite(s[2, 0])
    # A tiny scale_ub clamps every scale but the all-zero group's (already below it), and
    # saturates the large values at +-448.
    ub = torch.tensor(1e-4, dtype=FP32)
    q, s = R.silu_mul_quant_fp8(x[:2], group_size=gs, scale_ub=ub)
    assert s[1, 0].item() == as_dtype(floor, FP32)
    assert (s[0] == ub).all() and s[1, 1] == ub
    qf = q.float()
    assert not qf.isnan().any() and qf.abs().max().item() == 448.0
    assert (qf.abs() == 448.0).sum() > 1  # many values past 448 * ub, all saturated


@pytest.mark.parametrize("T", [0, 1, 6])
def test_silu_quant_col_layout(T):
    x = rand((T, 512), FP16, 13)
    q_row, s_row = R.silu_mul_quant_fp8(x, group_size=64)
    q_col, s_col = R.silu_mul_quant_fp8(x, group_size=64, scale_layout="col")
    assert s_col.shape == (T, 4) and s_col.stride() == (1, T)
    assert torch.equal(s_row, s_col) and torch.equal(q_row.float(), q_col.float())


# ---------------------------------------------------------------- pack_topk

def bf16_bits(v):
    """Round-to-nearest-even fp32 -> bf16, on the bit pattern (finite values only)."""
    b = struct.unpack("<I", struct.pack("<f", v))[0]
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF


def packed_py(i, w):
    v = ((i & 0xFFFF) << 16) | bf16_bits(w)
    return v - 2**32 if v >= 2**31 else v


CASES = [  # (id, fp32 weight): signs, ties and ids at the edges of the signed/unsigned ranges
    (0, 0.1), (1, -0.5), (7, -1.7), (255, 1.0 + 2.0**-8), (300, 1.0 + 3 * 2.0**-8),
    (32767, 0.333333), (32768, 2.5), (40000, -3.0e-5), (65535, -0.0), (12, 1e30),
]


@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
def test_pack_topk_bit_exact(ids_dtype):
    ids = torch.tensor([[c[0] for c in CASES]], dtype=ids_dtype)
    w = torch.tensor([[c[1] for c in CASES]], dtype=FP32)
    got = R.pack_topk(ids, w)
    assert got.dtype == torch.int32
    # Each weight is first rounded to fp32, exactly as the tensor stores it.
    assert got[0].tolist() == [packed_py(i, w[0, j].item()) for j, (i, _) in enumerate(CASES)]
    uid, uw = R.unpack_topk(got)
    assert uid[0].tolist() == [c[0] for c in CASES]
    assert torch.equal(uw.view(torch.int16), w.to(BF16).view(torch.int16))


@pytest.mark.parametrize("T,k", [(0, 8), (1, 1), (9, 6), (33, 16)])
@pytest.mark.parametrize("wdt", [FP32, BF16])
def test_pack_topk_round_trip(T, k, wdt):
    g = torch.Generator().manual_seed(14)
    ids = torch.randint(0, 65536, (T, k), generator=g, dtype=torch.int64)
    w = rand((T, k), wdt, 15)
    uid, uw = R.unpack_topk(R.pack_topk(ids, w))
    assert torch.equal(uid, ids.to(torch.int32)) and torch.equal(uw, w.to(BF16))


# ---------------------------------------------------------------- validation

X = torch.zeros(2, 256, dtype=BF16)
W = torch.zeros(4, 256, dtype=BF16)


@pytest.mark.parametrize("call,exc,name", [
    (lambda: R.router_gemm(X[0], W), ValueError, "x"),
    (lambda: R.router_gemm(X.int(), W), TypeError, "x"),
    (lambda: R.router_gemm(X, W[:, :8]), ValueError, "weight"),
    (lambda: R.router_gemm(X, W.int()), TypeError, "weight"),
    (lambda: R.router_gemm(X, W, torch.zeros(3)), ValueError, "bias"),
    (lambda: R.router_gemm(X, W, out_dtype=FP16), TypeError, "out_dtype"),
    (lambda: R.norm_router_gemm(X.float(), W[0], W), TypeError, "x"),
    (lambda: R.norm_router_gemm(X, W[0, :9], W), ValueError, "norm_weight"),
    (lambda: R.norm_router_gemm(X, W[0], W[:, :9]), ValueError, "gate_weight"),
    (lambda: R.silu_mul_quant_fp8(X, group_size=32), ValueError, "group_size"),
    (lambda: R.silu_mul_quant_fp8(X[:, :255]), ValueError, "x"),
    (lambda: R.silu_mul_quant_fp8(torch.zeros(2, 192, dtype=BF16)), ValueError, "x"),
    (lambda: R.silu_mul_quant_fp8(X.float()), TypeError, "x"),
    (lambda: R.silu_mul_quant_fp8(X, scale_layout="diag"), ValueError, "scale_layout"),
    (lambda: R.silu_mul_quant_fp8(X, scale_ub=torch.zeros(2)), TypeError, "scale_ub"),
    (lambda: R.pack_topk(X.int(), X[:, :4].float()), ValueError, "weights"),
    (lambda: R.pack_topk(X.float(), X.float()), TypeError, "ids"),
    (lambda: R.pack_topk(X.int(), X.half()), TypeError, "weights"),
])
def test_validation_errors(call, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        call()
