"""The router kernel's consumer warps: each turns its share of every stage into partial sums of
its (token, expert) tile, by one of two variants.

``dot``: CUDA-core dot products in fp32 (any dtype pair, fp32 weights stay fp32); warps take
whole k tiles in turn (warp w: tiles w, w + W, ...) for every expert and token of the CTA, so a
CTA's tiles are consumed W at a time, lanes own 16-byte column chunks, a butterfly sums the
lanes.
``mma``: tensor cores (mma.sync m16n8k16, bf16/fp16 in, fp32 accumulate) with experts as the
MMA's M dimension (swap-AB) so one token still fills an 8-wide N; warps own 32-column chunks (an
odd number of warps makes a stage row an odd multiple of 64 bytes, so a quarter-warp's fragment
loads from two rows hit disjoint shared-memory banks). fp32 weights (with bf16 x) enter as three
bf16 parts that sum to each weight exactly, one MMA per part, so the products are the fp32 ones.
Each warp leaves one partial tile; the epilogue (``reduction``) sums them.
"""

import itertools

import cutlass
import cutlass.cute as cute

from ..common import WARP
from ..dsl import dtype
from ..ptx import mma_m16n8k16, split_bf16, warp_sum
from .config import MMA_K

Float32, Int32 = cutlass.Float32, cutlass.Int32


class Consumers:
    """The consumer methods of ``RouterGemmKernel`` (a mixin over its configuration)."""

    @cute.jit
    def consume_dot(self, s_w, s_x, red, full, warp, lane, k_count, norm):
        """Warp w takes k tiles w, w + W, w + 2W, ... (W consumer warps) of this CTA's share;
        lane l owns columns [l * vec, (l + 1) * vec) of each. acc[m, j] sums x[m, :] * W[e_j, :]
        over the warp's columns; the epilogue sums the warps. With ``norm``, x is first
        multiplied by the norm weight, and each warp also sums x^2 per row over its columns."""
        vec = self.w_vec
        acc = cute.make_rmem_tensor(cute.make_layout((self.m_tile, self.e_tile), stride=(self.e_tile, 1)), Float32)
        acc.fill(0.0)
        sq = cute.make_rmem_tensor(cute.make_layout(self.m_tile), Float32)
        sq.fill(0.0)
        xv = cute.make_rmem_tensor(cute.make_layout((vec, self.m_tile), stride=(1, vec)), Float32)
        wv = cute.make_rmem_tensor(cute.make_layout(vec), Float32)
        for i in cutlass.range(warp, k_count, self.consumer_warps, unroll=1):
            s = xs = i
            cute.arch.mbarrier_wait(full + s, 0)
            for m in cutlass.range_constexpr(self.m_tile):
                chunk = cute.zipped_divide(s_x[(m, None, xs)], (vec,))
                xv[(None, m)].store(chunk[(None, lane)].load().to(Float32))
            if cutlass.const_expr(norm is not None):
                wv.store(cute.zipped_divide(norm.s_weight[(0, None, xs)], (vec,))[(None, lane)].load().to(Float32))
                for m in cutlass.range_constexpr(self.m_tile):
                    q = sq[m]
                    for v in cutlass.range_constexpr(vec):
                        q = q + xv[v, m] * xv[v, m]
                        xv[v, m] = xv[v, m] * wv[v]
                    sq[m] = q
            for j in cutlass.range_constexpr(self.e_tile):
                chunk = cute.zipped_divide(s_w[(j, None, s)], (vec,))
                wv.store(chunk[(None, lane)].load().to(Float32))
                for m in cutlass.range_constexpr(self.m_tile):
                    a = acc[m, j]
                    for v in cutlass.range_constexpr(vec):
                        a = a + xv[v, m] * wv[v]
                    acc[m, j] = a
        # Every lane ends with every sum; lanes write different ones.
        for m in cutlass.range_constexpr(self.m_tile):
            for j in cutlass.range_constexpr(self.e_tile):
                t = warp_sum(acc[m, j])
                if lane == (m * self.e_tile + j) % WARP:
                    red[warp, m, j] = t
        if cutlass.const_expr(norm is not None):
            for m in cutlass.range_constexpr(self.m_tile):
                t = warp_sum(sq[m])
                if lane == m % WARP:
                    norm.stats[2 + warp, m] = t

    @cute.jit
    def consume_mma(self, s_w, s_x, red, full, warp, lane, k_count, norm=None):
        """Warp w owns columns [32 w, 32 w + 32) of every stage. Lane (r, q) = (lane / 4, lane % 4)
        loads columns [8q, 8q + 8) of W rows r and r + 8 of each 16-expert block and of x row r
        of each 8-token block. The dot product does not care how columns pair up, so each load
        feeds two MMAs directly: MMA h uses columns 8q + 4h .. 8q + 4h + 3, which the fragment
        layout reads as k = 2q, 2q + 1 (a0/b0) and 2q + 8, 2q + 9 (a2/b1).
        Operands the tensor cores cannot take whole enter as bf16 parts that sum to them exactly
        (``split_bf16``), one MMA per pair of parts, so the products are the fp32 ones:
        fp32 weights as three parts; with ``norm`` (bf16 x and norm weight) x * norm_weight,
        which has at most 16 significant bits, as two. The largest parts' product accumulates
        apart from the others (``rest``): an infinite operand makes a zero part's product NaN,
        so a non-finite leading sum is kept as it is, as the unsplit product would give it.
        Each half of the lane's columns has its own accumulators too: independent MMA chains
        (measured faster for the fused kernel's split parts: perf/NOTES.md).
        Each warp then also sums x^2 over its columns per row."""
        eb, nb = self.e_tile // 16, self.m_tile // 8
        a_parts, b_parts = self.w_parts, (2 if norm is not None else 1)
        split = a_parts * b_parts > 1
        r, q = lane // 4, lane % 4
        # [C fragment, expert block, token block, column half]
        chains = cute.make_layout((4, eb, nb, 2), stride=(1, 4, 4 * eb, 4 * eb * nb))
        acc = cute.make_rmem_tensor(chains, Float32)
        acc.fill(0.0)
        rest = None
        if cutlass.const_expr(split):
            rest = cute.make_rmem_tensor(chains, Float32)
            rest.fill(0.0)
        # A fragments: [column pair of the lane's 8, row r / r + 8, part]
        a32 = cute.make_rmem_tensor(cute.make_layout((4, 2, a_parts), stride=(1, 4, 8)), Int32)
        wv = cute.make_rmem_tensor(cute.make_layout(8), dtype(self.w_dtype))
        w32 = cute.recast_tensor(wv, Int32)  # 16-bit weights: the 4 packed pairs as they are
        # B fragments: [column pair, token block, part]
        b32 = cute.make_rmem_tensor(cute.make_layout((4, nb, b_parts), stride=(1, 4, 4 * nb)), Int32)
        bx = cute.make_rmem_tensor(cute.make_layout(8), dtype(self.x_dtype))
        x32 = cute.recast_tensor(bx, Int32)
        xf = cute.make_rmem_tensor(cute.make_layout(8), Float32)
        nf = cute.make_rmem_tensor(cute.make_layout(8), Float32)
        sq = cute.make_rmem_tensor(cute.make_layout(nb), Float32)
        sq.fill(0.0)
        col = warp * (MMA_K // 8) + q  # this lane's 8-column chunk within the stage row
        for i in cutlass.range(k_count, unroll=1):
            s = xs = i
            cute.arch.mbarrier_wait(full + s, 0)
            if cutlass.const_expr(norm is not None):
                nf.store(cute.zipped_divide(norm.s_weight[(0, None, xs)], (8,))[(None, col)].load().to(Float32))
            for n in cutlass.range_constexpr(nb):
                chunk = cute.zipped_divide(s_x[(n * 8 + r, None, xs)], (8,))
                if cutlass.const_expr(norm is not None):
                    xf.store(chunk[(None, col)].load().to(Float32))
                    q2 = sq[n]
                    for v in cutlass.range_constexpr(8):
                        q2 = q2 + xf[v] * xf[v]
                    sq[n] = q2
                    xf.store(xf.load() * nf.load())
                    for c in cutlass.range_constexpr(4):
                        b32[c, n, 0], b32[c, n, 1] = split_bf16(xf[2 * c], xf[2 * c + 1], 2)
                else:
                    bx.store(chunk[(None, col)].load())
                    for c in cutlass.range_constexpr(4):
                        b32[c, n, 0] = x32[c]
            for b in cutlass.range_constexpr(eb):
                for rh in cutlass.range_constexpr(2):
                    wv.store(cute.zipped_divide(s_w[(b * 16 + r + 8 * rh, None, s)], (8,))[(None, col)].load())
                    for c in cutlass.range_constexpr(4):
                        if cutlass.const_expr(a_parts == 1):
                            a32[c, rh, 0] = w32[c]
                        else:
                            parts = split_bf16(wv[2 * c], wv[2 * c + 1], a_parts)
                            for p in cutlass.range_constexpr(a_parts):
                                a32[c, rh, p] = parts[p]
                for n in cutlass.range_constexpr(nb):
                    for half in cutlass.range_constexpr(2):
                        for pa, pb in itertools.product(range(a_parts), range(b_parts)):
                            into = rest if pa + pb else acc
                            d = mma_m16n8k16(
                                self.x_dtype,
                                a32[2 * half, 0, pa], a32[2 * half, 1, pa],
                                a32[2 * half + 1, 0, pa], a32[2 * half + 1, 1, pa],
                                b32[2 * half, n, pb], b32[2 * half + 1, n, pb],
                                *[into[c, b, n, half] for c in range(4)])
                            for c in cutlass.range_constexpr(4):
                                into[c, b, n, half] = d[c]
        for c, b, n in itertools.product(range(4), range(eb), range(nb)):
            lead = acc[c, b, n, 0] + acc[c, b, n, 1]
            if cutlass.const_expr(split):
                lead = Float32(cutlass.select_(lead - lead == Float32(0.0),
                                               lead + (rest[c, b, n, 0] + rest[c, b, n, 1]), lead))
            acc[c, b, n, 0] = lead
        # C fragment: c0, c1 = (expert r, tokens 2q, 2q + 1); c2, c3 = expert r + 8.
        for b in cutlass.range_constexpr(eb):
            for n in cutlass.range_constexpr(nb):
                for c in cutlass.range_constexpr(4):
                    red[warp, n * 8 + 2 * q + c % 2, b * 16 + r + 8 * (c // 2)] = acc[c, b, n, 0]
        if cutlass.const_expr(norm is not None):
            # Lanes 4r .. 4r + 3 hold row r's columns: sum them; the epilogue sums the warps.
            for n in cutlass.range_constexpr(nb):
                v = sq[n] + cute.arch.shuffle_sync_bfly(sq[n], offset=1)
                v = v + cute.arch.shuffle_sync_bfly(v, offset=2)
                if q == 0:
                    norm.stats[2 + warp, n * 8 + r] = v
