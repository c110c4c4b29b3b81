"""silu_mul_quant_fp8 on the GPU against the spec (reference.silu_mul_quant_fp8, run on the GPU).

Tolerances, compared in float64:
- scales: relative error <= 1e-6. The kernel does the spec's fp32 operations in the spec's order
  (same expf algorithm, 1 + exp rounded on its own) but divides through approximate reciprocals
  (1 ulp each), so amax and hence the scale sit within ~3e-7 relative of the spec's.
- ue8m0 scales: bit-exact, as required. With ue8m0 the kernel keeps the spec's true divisions,
  so a power of two is only off if amax sat within an ulp of a power-of-two boundary.
- q: within one e4m3 step of the spec's q (at the larger of the two magnitudes): a 1e-6 change in
  the scale, or an ulp in y, can move y / scale across one rounding boundary, no further. (In
  dequantised terms that adds |q| times the scale difference, which the scale check bounds.)
- NaN: scales and q are NaN exactly where the spec's are. Outputs are poisoned with NaN
  beforehand, so an element the kernel never wrote shows up as a NaN mismatch.
"""

import pytest
import torch

import cute_kernels
from cute_kernels import reference
from helpers import run_on_busy_stream

pytestmark = pytest.mark.gpu
FP8_NAN_BYTE = 0x7F


def cuda_gen(gen):
    """A CUDA generator seeded from the test's CPU generator: big inputs are drawn on the GPU."""
    return torch.Generator("cuda").manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))


def make(t, h, gen, dtype=torch.bfloat16, std=2.0):
    return (torch.randn(t, 2 * h, device="cuda", generator=cuda_gen(gen)) * std).to(dtype)


def scale_shape(t, h, group, layout):
    g = h // group
    return (t, g), ((g, 1) if layout == "row" else (1, t))


def poisoned(t, h, group, layout):
    q = torch.empty(t, h, dtype=torch.float8_e4m3fn, device="cuda")
    q.view(torch.uint8).fill_(FP8_NAN_BYTE)
    shape, strides = scale_shape(t, h, group, layout)
    s = torch.empty_strided(shape, strides, dtype=torch.float32, device="cuda").fill_(float("nan"))
    return q, s


def e4m3_step(v):
    """Spacing of e4m3 values at magnitude v (float64): 2**(e - 3), subnormals 2**-9."""
    e = torch.floor(torch.log2(v.clamp_min(2.0**-6)))
    return torch.exp2(e - 3)


def assert_matches(x, got_q, got_s, group, ue8m0=False, scale_ub=None, layout="row"):
    want_q, want_s = reference.silu_mul_quant_fp8(x, group, scale_ub=scale_ub, ue8m0=ue8m0, scale_layout=layout)
    t, h = want_q.shape
    assert got_q.shape == (t, h) and got_q.dtype == torch.float8_e4m3fn and got_q.is_contiguous()
    assert got_s.shape == want_s.shape and got_s.dtype == torch.float32
    if t > 1 and h // group > 1:
        assert got_s.stride() == want_s.stride(), (got_s.stride(), want_s.stride())

    gs, ws = got_s.double(), want_s.double()
    nan_diff = gs.isnan() != ws.isnan()
    assert not nan_diff.any(), f"scale NaN mismatch at {nan_diff.nonzero()[:5].tolist()}"
    fin = ~ws.isnan()
    if ue8m0:
        bad = fin & (gs != ws)
    else:
        bad = fin & (gs != ws) & ~((gs - ws).abs() <= 1e-6 * ws.abs())
    assert not bad.any(), f"{int(bad.sum())} scales differ, e.g. at {bad.nonzero()[:3].tolist()}: " \
                          f"got {gs[bad][:3].tolist()} want {ws[bad][:3].tolist()}"

    gq, wq = got_q.double(), want_q.double()
    assert torch.equal(gq.isnan(), wq.isnan()), f"q NaN mismatch: {int((gq.isnan() != wq.isnan()).sum())} elements"
    g_scale = gs.repeat_interleave(group, dim=1)
    w_scale = ws.repeat_interleave(group, dim=1)
    ok = gq.isnan()
    finite = ~ok & torch.isfinite(g_scale) & torch.isfinite(w_scale)
    ok |= finite & ((gq - wq).abs() <= e4m3_step(torch.maximum(gq.abs(), wq.abs())))
    ok |= ~finite & (gq == wq)  # inf / NaN scales: q is 0, +-448 or NaN and must be identical
    assert ok.all(), f"{int((~ok).sum())} of {ok.numel()} q values off, e.g. at {(~ok).nonzero()[:3].tolist()}"


def run_and_check(x, group, *, ue8m0=False, scale_ub=None, layout="row", pdl=True):
    t, h = x.shape[0], x.shape[1] // 2
    q, s = poisoned(t, h, group, layout)
    got_q, got_s = cute_kernels.silu_mul_quant_fp8(x, group, scale_ub=scale_ub, ue8m0=ue8m0, scale_layout=layout,
                                                   out=q, scales=s, pdl=pdl)
    torch.cuda.synchronize()
    assert got_q is q and got_s is s
    assert_matches(x, got_q, got_s, group, ue8m0, scale_ub, layout)


# (H, group, layout) pairs: few compiled variants, every H and both of each setting.
SHAPES = [(128, 128, "row"), (128, 64, "col"), (1536, 64, "row"), (2048, 128, "col"), (7168, 128, "row")]


@pytest.mark.parametrize("t", [0, 1, 3, 16, 127, 4096, 65536])
@pytest.mark.parametrize("h,group,layout", SHAPES)
def test_matches_spec(t, h, group, layout, gen):
    if h == 7168 and t == 65536:
        t = 16384  # keeps the float64 comparison within memory and time; same code path
    run_and_check(make(t, h, gen), group, layout=layout)


# (x dtype, H, group, ue8m0, scale_ub, layout, pdl): each flag on and off, against both layouts.
FLAGS = [
    (torch.bfloat16, 2048, 128, True, False, "row", True),
    (torch.bfloat16, 2048, 64, True, False, "col", False),
    (torch.bfloat16, 2048, 128, False, True, "row", True),
    (torch.bfloat16, 2048, 128, True, True, "col", True),
    (torch.bfloat16, 7168, 128, True, True, "row", True),
    (torch.float16, 2048, 128, False, False, "row", True),
    (torch.float16, 1536, 64, True, True, "col", True),
    (torch.bfloat16, 2048, 128, False, False, "row", False),
]


@pytest.mark.parametrize("t", [1, 127, 4096])
@pytest.mark.parametrize("dtype,h,group,ue8m0,has_ub,layout,pdl", FLAGS)
def test_flags(t, dtype, h, group, ue8m0, has_ub, layout, pdl, gen):
    x = make(t, h, gen, dtype)
    ub = None
    if has_ub:
        # The median uncapped scale: about half the groups get capped (and saturate).
        _, s = reference.silu_mul_quant_fp8(x, group)
        ub = s.float().median().reshape(1).clone()
    run_and_check(x, group, ue8m0=ue8m0, scale_ub=ub, layout=layout, pdl=pdl)


def special_input(t, h, gen, dtype=torch.bfloat16):
    """Rows of zero groups, huge values (saturation), tiny values, NaN and +-inf in gate and up."""
    x = make(t, h, gen, dtype)
    x[0] = 0  # every group all-zero: scale = 1e-10 / 448
    x[1, :h] = 1e4  # y = 1e8
    x[1, h:] = -1e4
    x[2] *= 1e-6  # tiny y: e4m3 subnormals after scaling stay representable
    x[3, 5] = float("nan")  # one NaN gate: its group's scale and q are NaN
    x[4, h + 2] = float("nan")  # NaN in up
    x[5, 7] = float("inf")  # silu(inf) * u = +-inf: scale inf
    x[6, 9] = float("-inf")  # -inf / (1 + inf) = NaN
    x[7, h + 3] = float("inf")
    x[8, :64] = -100.0  # exp(100) overflows to inf: silu = -0
    x[9, 1] = 3e4 if dtype == torch.float16 else 3e38  # huge gate next to ordinary values
    return x


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("h,group,layout", [(128, 64, "col"), (2048, 128, "row")])
@pytest.mark.parametrize("ue8m0", [False, True])
def test_special_values(dtype, h, group, layout, ue8m0, gen):
    x = special_input(16, h, gen, dtype)
    run_and_check(x, group, ue8m0=ue8m0, layout=layout)


@pytest.mark.parametrize("ub_value", [0.0, float("nan"), -1.0, 1e-40, 3e38, 1e-3, float("inf")])
@pytest.mark.parametrize("ue8m0", [False, True])
def test_scale_ub_edge_values(ub_value, ue8m0, gen):
    """0 (y / 0 saturates, 0 / 0 is NaN), NaN, negative, subnormal (ue8m0's subnormal path)."""
    x = special_input(16, 2048, gen)
    ub = torch.tensor([ub_value], dtype=torch.float32, device="cuda")
    layout = "col" if ue8m0 else "row"
    run_and_check(x, 128, ue8m0=ue8m0, scale_ub=ub, layout=layout)


def test_ue8m0_powers_of_two_and_boundaries(gen):
    """Groups whose amax / 448 is exactly a power of two stay; just above rounds up."""
    t, h = 8, 2048
    x = torch.zeros(t, 2 * h, dtype=torch.bfloat16, device="cuda")
    x[:, h:] = 1.0
    x[:, :h] = 20.0  # silu(20) = 20 / (1 + exp(-20)): just below 20 in fp32
    x[0, h:] = 448.0 / 19.99  # amax near 448
    x[1, h:] = torch.linspace(-3, 3, h, device="cuda").to(torch.bfloat16)
    x[2, h:] = 2.0**-20
    run_and_check(x, 128, ue8m0=True)
    for group in (64, 128):
        run_and_check(make(257, h, gen), group, ue8m0=True, layout="col")


def test_allocates_outputs(gen):
    x = make(37, 1536, gen)
    for layout in ("row", "col"):
        q, s = cute_kernels.silu_mul_quant_fp8(x, 64, scale_layout=layout)
        assert s.stride() == ((24, 1) if layout == "row" else (1, 37))
        assert_matches(x, q, s, 64, layout=layout)
    q, s = cute_kernels.silu_mul_quant_fp8(x[:0], 64, scale_layout="col")
    assert q.shape == (0, 1536) and s.shape == (0, 24)


def test_rejects_what_it_cannot_do_correctly(gen):
    x = make(16, 2048, gen)
    op = cute_kernels.silu_mul_quant_fp8
    with pytest.raises(ValueError, match="group_size"):
        op(make(4, 192, gen), 128)
    with pytest.raises(ValueError, match="scale_layout"):
        op(x, 128, scale_layout="rows")
    with pytest.raises(ValueError, match="x must be contiguous"):
        op(torch.empty(4096, 16, dtype=torch.bfloat16, device="cuda").t(), 128)
    with pytest.raises(ValueError, match="x must be 16-byte aligned"):
        op(torch.empty(16 * 4096 + 1, dtype=torch.bfloat16, device="cuda")[1:].view(16, 4096), 128)
    with pytest.raises(TypeError, match="out must have dtype float8_e4m3fn"):
        op(x, 128, out=torch.empty(16, 2048, dtype=torch.float16, device="cuda"))
    with pytest.raises(ValueError, match="out must have size 16 in dim 0"):
        op(x, 128, out=torch.empty(15, 2048, dtype=torch.float8_e4m3fn, device="cuda"))
    with pytest.raises(ValueError, match="out overlaps x"):
        op(x, 128, out=x.view(torch.float8_e4m3fn).view(-1)[:16 * 2048].view(16, 2048))
    with pytest.raises(ValueError, match="out is on cpu"):
        op(x, 128, out=torch.empty(16, 2048, dtype=torch.float8_e4m3fn))
    with pytest.raises(ValueError, match="scales must have strides"):
        op(x, 128, scales=torch.empty(16, 16, device="cuda"), scale_layout="col")
    with pytest.raises(ValueError, match="scales must have strides"):
        op(x, 128, scales=torch.empty(16, 16, device="cuda").t().contiguous().t())
    with pytest.raises(ValueError, match="scales must have size 32 in dim 1"):
        op(x, 64, scales=torch.empty(16, 16, device="cuda"))
    with pytest.raises(TypeError, match="scales must have dtype float32"):
        op(x, 128, scales=torch.empty(16, 16, dtype=torch.float16, device="cuda"))
    with pytest.raises(ValueError, match="scales overlaps x"):
        op(x, 128, scales=x.view(torch.float32).view(-1)[:256].view(16, 16))
    with pytest.raises(ValueError, match="scale_ub is on cpu"):
        op(x, 128, scale_ub=torch.ones(1))
    with pytest.raises(TypeError, match="scale_ub must be a one-element float32 tensor"):
        op(x, 128, scale_ub=torch.ones(2, device="cuda"))


def test_non_default_stream_orders_after_producer(gen):
    """The kernel runs on torch's current stream: it must see x written just before on it."""
    x = make(4096, 2048, gen)
    q, scales = run_on_busy_stream(lambda staged: cute_kernels.silu_mul_quant_fp8(staged, 128), x)
    assert_matches(x, q, scales, 128)


@pytest.mark.parametrize("pdl", [True, False])
@pytest.mark.parametrize("layout", ["row", "col"])
def test_cuda_graph_replay_with_new_inputs(pdl, layout, gen):
    t, h, group = 300, 2048, 128
    x = make(t, h, gen)
    ub = torch.tensor([1.0], device="cuda")
    q, s = poisoned(t, h, group, layout)
    q2, s2 = poisoned(t, h, group, layout)
    kw = dict(scale_layout=layout, pdl=pdl, ue8m0=True, scale_ub=ub)
    cute_kernels.silu_mul_quant_fp8(x, group, out=q, scales=s, **kw)  # warm: loads outside capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        cute_kernels.silu_mul_quant_fp8(x, group, out=q, scales=s, **kw)
        cute_kernels.silu_mul_quant_fp8(x, group, out=q2, scales=s2, **kw)  # back to back: a PDL chain
    for _ in range(3):
        x.copy_(make(t, h, gen))
        ub.fill_(float(torch.rand((), generator=gen)) * 0.05)  # the cap is read on the device
        for a, b in ((q, s), (q2, s2)):
            a.view(torch.uint8).fill_(FP8_NAN_BYTE)
            b.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        assert_matches(x, q, s, group, True, ub, layout)
        assert_matches(x, q2, s2, group, True, ub, layout)


def test_deterministic(gen):
    x = make(4096, 2048, gen)
    q0, s0 = cute_kernels.silu_mul_quant_fp8(x, 128)
    for _ in range(20):
        q, s = cute_kernels.silu_mul_quant_fp8(x, 128)
        assert torch.equal(q.view(torch.uint8), q0.view(torch.uint8)) and torch.equal(s, s0)


def test_large_t_tail_rows(gen):
    """T = 262144 + 3 at H = 128: many CTAs, and a last CTA that is mostly past the end."""
    t = 262144 + 3
    x = make(t, 128, gen)
    run_and_check(x, 64, layout="col")
