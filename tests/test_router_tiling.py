"""The router kernels' tilings (no GPU): every specialisation the heuristics pick holds a CTA's
whole share of H in shared memory (the kernel never reuses a stage), within the budget."""

import itertools
import random

import pytest

from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import presets

_rng = random.Random(7)
SHAPES = [(p.hidden_size, p.num_experts, p.gate_dtype) for p in presets.PRESETS.values()] + [
    (8 * _rng.randint(1, 8192), _rng.randint(1, 8192), _rng.choice(["bfloat16", "float32"])) for _ in range(40)
] + [(8, 1, "bfloat16"), (65536, 8192, "float32"), (65536, 1, "bfloat16")]
M_VALUES = [1, 2, 3, 5, 8, 13, 16, 31, 64, 127, 128, 256, 1000]


def _fits(kernel, h):
    return kernel.holds_share(h) and kernel.smem_bytes() <= router_tiling.SMEM_BUDGET and _tma_aligned(kernel)


def _tma_aligned(kernel):
    """Every stage's TMA tiles start 128-byte aligned: each TMA slot of the shared-memory plan is,
    and so is its step from one stage to the next."""
    from cute_kernels.kernels.common import WIDTHS
    from cute_kernels.kernels.router_gemm.config import TMA_ALIGN

    if hasattr(kernel, "norm_slot"):
        assert kernel.norm_slot >= kernel.k_tile
    tma = [s for s in kernel.smem_plan() if s.name in ("w", "x", "norm_w")]
    return len(tma) == (3 if kernel.has_norm else 2) and all(
        s.align % TMA_ALIGN == 0 and s.stride[-1] * WIDTHS[s.dtype] // 8 % TMA_ALIGN == 0 for s in tma)


@pytest.mark.parametrize("h,e,w_dtype", SHAPES)
def test_router_picks_hold_their_share(h, e, w_dtype):
    for m, x_dtype in itertools.product(M_VALUES, ("bfloat16", "float32")):
        kernel = router_tiling.pick(x_dtype, w_dtype, "float32", None, m, h, e, "dot", True)
        assert _fits(kernel, h), kernel
        if router_tiling.mma_dtypes(x_dtype, w_dtype) and h <= router_tiling.mma_max_h(w_dtype):
            kernel = router_tiling.pick(x_dtype, w_dtype, "float32", None, m, h, e, "mma", True)
            assert _fits(kernel, h), kernel


@pytest.mark.parametrize("h,e,w_dtype", SHAPES)
def test_norm_router_picks_hold_their_share(h, e, w_dtype):
    for m, norm_dtype in itertools.product(M_VALUES, ("bfloat16", "float32")):
        try:
            kernel = router_tiling.pick_norm("bfloat16", norm_dtype, w_dtype, "float32", m, h, e, True)
        except ValueError as err:  # only where even one token's x cannot stay resident
            assert "too large for the fused kernel" in str(err) and h > 16384
            continue
        assert _fits(kernel, h), kernel


@pytest.mark.parametrize("w_dtype,limit", [("bfloat16", 32768), ("float16", 32768), ("float32", 16384)])
def test_mma_limit(w_dtype, limit):
    x_dtype = "float16" if w_dtype == "float16" else "bfloat16"
    h = router_tiling.mma_max_h(w_dtype)
    assert h == limit
    assert router_tiling.variant_for(x_dtype, w_dtype, 64, h) == "mma"
    assert router_tiling.variant_for(x_dtype, w_dtype, 64, h + 8) == "dot"
    for m in M_VALUES:
        assert _fits(router_tiling.pick(x_dtype, w_dtype, "float32", None, m, h, 4096, "mma", True), h)


def test_mma_dtypes():
    from cute_kernels.kernels.router_gemm import MMA_DTYPES

    names = {"bfloat16", "float16", "float32"}
    assert {(x, w) for x in names for w in names if router_tiling.mma_dtypes(x, w)} == set(MMA_DTYPES)
    assert router_tiling.mma_dtypes("bfloat16", "float32") and router_tiling.mma_dtypes("float16", "float16")
    assert not router_tiling.mma_dtypes("float16", "float32") and not router_tiling.mma_dtypes("float32", "float32")
    assert not router_tiling.mma_dtypes("bfloat16", "float16")


def test_dot_runs_without_a_split_where_the_share_fits():
    # Measured on the H100: a split of H cost 1.5-2 us at every shape (perf/NOTES.md).
    for name in ("deepseek-v3", "kimi-k2", "gpt-oss-120b", "minimax-m2", "qwen3-235b-a22b"):
        p = presets.get(name)
        for m in (1, 2, 4, 8):
            kernel = router_tiling.pick("bfloat16", p.gate_dtype, "float32", None, m, p.hidden_size,
                                        p.num_experts, "dot", True)
            assert kernel.split_k == 1 and kernel.e_tile >= 2, (name, m, kernel)


def test_a_config_that_reuses_stages_is_refused():
    kernel = router_tiling.pick("bfloat16", "bfloat16", "float32", None, 1, 7168, 256, "dot", True)
    short = kernel.__class__(**{**kernel.__dict__, "stages": kernel.stages - 1})
    assert kernel.holds_share(7168) and not short.holds_share(7168)


@pytest.mark.parametrize("h,e,w_dtype", SHAPES)
def test_split_reductions_stay_within_their_limits(h, e, w_dtype):
    """A global-reduce split never needs more counters than the workspace's fixed region; a
    cluster split stays a portable cluster size; the fused kernel splits across clusters only."""
    from cute_kernels.kernels.router_gemm.config import WORKSPACE_COUNTERS

    for m in M_VALUES + [5000]:
        kernels = [router_tiling.pick("bfloat16", w_dtype, "float32", None, m, h, e, "dot", True)]
        if router_tiling.mma_dtypes("bfloat16", w_dtype) and h <= router_tiling.mma_max_h(w_dtype):
            kernels.append(router_tiling.pick("bfloat16", w_dtype, "float32", None, m, h, e, "mma", True))
        for k in kernels:
            if k.uses_workspace:
                assert k.output_tiles(m, e) <= WORKSPACE_COUNTERS, k
                assert k.workspace_ints(m, e) == WORKSPACE_COUNTERS + k.output_tiles(m, e) * k.split_k * (
                    k.m_tile * k.e_tile)
            else:
                assert k.workspace_ints(m, e) == 0 and k.split_k <= 8, k
        try:
            fused = router_tiling.pick_norm("bfloat16", "bfloat16", w_dtype, "float32", m, h, e, True)
        except ValueError:
            continue
        assert not fused.uses_workspace, fused


def test_mma_splits_h_8_ways_across_a_cluster():
    # Measured on the H100 (perf/NOTES.md): DeepSeek-V3 M = 16 3.21 us across a cluster against 4.73
    # through the workspace; at M = 128 the two are level (12.24 / 12.22).
    for name in ("deepseek-v3", "kimi-k2", "gpt-oss-120b", "qwen3-235b-a22b"):
        p = presets.get(name)
        for m in (5, 8, 16, 17, 64, 65, 128, 256):
            k = router_tiling.pick("bfloat16", "bfloat16", "float32", None, m, p.hidden_size, p.num_experts,
                                       "mma", True)
            assert k.uses_cluster and k.split_k == 8 and not k.uses_workspace, (name, m, k)
            assert k.e_tile == (32 if m <= 64 or p.num_experts < 256 else 16), (name, m, k)
            assert k.m_tile == (max(8, min(16, 1 << (m - 1).bit_length())) if m <= 64 else 32), (name, m, k)


def test_mma_split_never_leaves_a_cta_without_a_k_tile():
    for h in (8, 64, 128, 136, 256, 1000):
        k = router_tiling.pick("bfloat16", "bfloat16", "float32", None, 32, h, 64, "mma", True)
        assert k.split_k == min(8, -(-h // k.k_tile)) and k.holds_share(h), (h, k)


def test_reduce_is_validated():
    from cute_kernels.kernels.router_gemm import NormRouterGemm, RouterGemm

    with pytest.raises(ValueError, match="reduce must be one of"):
        RouterGemm("bfloat16", "bfloat16", "float32", None, "mma", 16, 8, 2, 1, True, reduce="atomic")
    with pytest.raises(ValueError, match="portable cluster size"):
        RouterGemm("bfloat16", "bfloat16", "float32", None, "mma", 16, 8, 16, 1, True, reduce="cluster")
    RouterGemm("bfloat16", "bfloat16", "float32", None, "mma", 16, 8, 16, 1, True, reduce="global")
    with pytest.raises(ValueError, match="splits H across a cluster only"):
        NormRouterGemm("bfloat16", "bfloat16", "float32", None, "dot", 2, 1, 2, 1, True, 8, "global",
                       norm_dtype="bfloat16")


def test_mma_warp_counts():
    """16-bit weights: an odd number of consumer warps, so a stage row is an odd multiple of 64
    bytes and fragment loads are free of bank conflicts; the most warps that leave each CTA
    MMA_MIN_STEPS k tiles. fp32 weights keep 4 (measured on the H100, perf/NOTES.md)."""
    expect = {"deepseek-v3": 7, "kimi-k2": 7, "qwen3-235b-a22b": 5, "gpt-oss-120b": 3, "minimax-m2": 4,
              "minimax-m3": 4}
    for name, warps in expect.items():
        p = presets.get(name)
        for m in (5, 16, 64, 128):
            k = router_tiling.pick("bfloat16", p.gate_dtype, "float32", None, m, p.hidden_size, p.num_experts,
                                       "mma", True)
            assert k.consumer_warps == warps, (name, m, k)
            if warps % 2:
                assert k.k_tile * 2 % 128 == 64 and k.k_tiles_per_cta(p.hidden_size) >= router_tiling.MMA_MIN_STEPS
    fused = router_tiling.pick_norm("bfloat16", "bfloat16", "bfloat16", "float32", 16, 7168, 384, True)
    assert fused.variant == "mma" and fused.consumer_warps == 7 and fused.norm_slot == 256  # 224 padded to 512 B
    flash = router_tiling.pick_norm("bfloat16", "bfloat16", "bfloat16", "float32", 16, 4096, 256, True)
    assert flash.consumer_warps == 4  # the router's 5 measured slower in the fused kernel
    # Small H: no count leaves 3 k tiles per CTA, so the most k tiles (3 warps) first.
    assert router_tiling.mma_warps(512, "bfloat16")[:3] == [3, 5, 7]
