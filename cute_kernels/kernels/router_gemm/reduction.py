"""The router kernel's epilogue: the consumer warps' partial tiles summed, the split-K partials
of CTAs that share an output tile combined in a fixed rank order (bitwise-deterministic), bias,
one rounding, the store.

CTAs that split H (split_k > 1) combine their partial tiles by one of two means (``reduce``):
across a thread-block cluster, CTA r finalises every split_k-th vector of the tile, and each CTA
sends those vectors of its partial tile to CTA r's inbox in distributed shared memory
(``st.async``, counted by the inbox's mbarrier: no cluster-wide barrier after the start, no
remote reads); or through a global workspace, each CTA writes its tile and counts itself in at
the tile's arrival counter, and the last to arrive sums all of them (the counter only elects
that CTA; no atomic touches a sum).
"""

from typing import NamedTuple

import cutlass
import cutlass.cute as cute

from ..common import WARP
from ..dsl import dtype
from ..ptx import load_global_cg, send_dsmem
from .config import WORKSPACE_COUNTERS

Float32, Int32 = cutlass.Float32, cutlass.Int32


class Inbox(NamedTuple):
    """Across a cluster, what the peers send a CTA: ``parts`` [split_k, owned vectors], the
    split ranks' shares of the vectors it finalises; ``stats`` [split_k, m_tile], their sums of
    squares (fused norm only); ``full``, the mbarrier their bytes complete on."""
    parts: object
    stats: object
    full: object


class SplitKReduction:
    """The epilogue methods of ``RouterGemmKernel`` (a mixin over its configuration)."""

    @cute.jit
    def reduce_and_store(self, red, bias_vals, out, e_blk, m_blk, rank, tidx, h, norm=None, workspace=None, last=None,
                         inbox=None):
        """Sum the partial tiles, add the bias, round once, store. Fixed order (warp slices,
        then split ranks), so results are bitwise-reproducible. Works on ``red_vec``-float
        vectors: the consumer warps first fold their slices into slice 0. Across a cluster, each
        CTA then sends its vectors to the CTAs that finalise them (``send_partials``) and sums
        what it receives. With the global reduction, each CTA publishes its tile
        (``publish_partial``) and the last of the tile's CTAs to arrive sums all of them."""
        consumer_threads = self.consumer_warps * WARP
        rv = self.red_vec
        n_vec = self.tile_vecs
        flat = cute.make_tensor(red.iterator, cute.make_layout(self.consumer_warps * n_vec * rv))
        vecs = cute.zipped_divide(flat, (rv,))  # (rv, slices * n_vec)
        if cutlass.const_expr(self.consumer_warps > 1 or norm is not None or self.uses_cluster):
            if tidx < consumer_threads:  # whole warps: the producer warp must not join this barrier
                cute.arch.barrier(barrier_id=1, number_of_threads=consumer_threads)
                if cutlass.const_expr(self.consumer_warps > 1):
                    for v in cutlass.range(tidx, n_vec, consumer_threads, unroll=1):
                        acc = vecs[(None, v)].load()
                        for sl in cutlass.range_constexpr(1, self.consumer_warps):
                            acc = acc + vecs[(None, sl * n_vec + v)].load()
                        vecs[(None, v)].store(acc)
                if cutlass.const_expr(norm is not None):
                    if tidx < self.m_tile:
                        q = norm.stats[2, tidx]
                        for w in cutlass.range_constexpr(1, self.consumer_warps):
                            q = q + norm.stats[2 + w, tidx]
                        norm.stats[0, tidx] = q
        if cutlass.const_expr(self.uses_cluster):
            cute.arch.cluster_wait()  # pairs with run_cta's arrive: every peer's inbox barrier is ready
            if tidx < consumer_threads:
                self.send_partials(vecs, n_vec, norm, inbox, rank, tidx)
        else:
            cute.arch.sync_threads()
        if cutlass.const_expr(self.uses_workspace):
            # This output tile's split_k partial tiles, in rank order, after the counters.
            tile = m_blk * cute.ceil_div(cute.size(out, mode=[1]), self.e_tile) + e_blk
            parts_at = cute.recast_ptr(workspace.iterator + WORKSPACE_COUNTERS, dtype=Float32) + (
                tile * self.split_k * self.m_tile * self.e_tile)
            self.publish_partial(vecs, n_vec, workspace, parts_at, last, tile, rank, tidx)
        if tidx < consumer_threads:
            if cutlass.const_expr(norm is not None):
                self.finish_rms(norm, h, tidx, consumer_threads, inbox)
            if cutlass.const_expr(self.uses_workspace):
                if last[0] != 0:
                    cute.arch.fence_acq_rel_gpu()  # the other CTAs' tiles, published before their arrival
                    self.store_tile(vecs, n_vec, bias_vals, out, e_blk, m_blk, rank, tidx, norm, parts_at)
            elif cutlass.const_expr(self.uses_cluster):
                self.store_tile(vecs, n_vec, bias_vals, out, e_blk, m_blk, rank, tidx, norm, inbox.parts)
            else:
                self.store_tile(vecs, n_vec, bias_vals, out, e_blk, m_blk, rank, tidx, norm, red)

    @cute.jit
    def send_partials(self, vecs, n_vec, norm, inbox, rank, tidx):
        """Across a cluster: vector v of this CTA's folded tile goes to slot (rank, v // split_k)
        of CTA (v % split_k)'s inbox, and with the norm each row's sum of squares to every CTA's
        stats inbox; then this CTA waits until its own inbox holds every peer's share."""
        consumer_threads = self.consumer_warps * WARP
        rv, split = self.red_vec, self.split_k
        for v in cutlass.range(tidx, n_vec, consumer_threads, unroll=1):
            slot = inbox.parts.iterator + rank * (self.owned_vecs * rv) + (v // split) * rv
            send_dsmem(slot, v % split, [vecs[(j, v)] for j in range(rv)], inbox.full)
        expected = ((n_vec + split - 1 - rank) // split) * split * rv * 4  # split shares of the owned vectors
        if cutlass.const_expr(norm is not None):
            if tidx < self.m_tile:
                for p in cutlass.range_constexpr(split):
                    send_dsmem(inbox.stats.iterator + rank * self.m_tile + tidx, p, [norm.stats[0, tidx]], inbox.full)
            expected = expected + split * self.m_tile * 4
        if tidx == 0:
            cute.arch.mbarrier_arrive_and_expect_tx(inbox.full, expected)
        cute.arch.mbarrier_wait(inbox.full, 0)

    @cute.jit
    def publish_partial(self, vecs, n_vec, workspace, parts_at, last, tile, rank, tidx):
        """Global reduction: write this CTA's partial tile to its slot of ``parts_at``, then count
        it in at the tile's counter (``count_in``)."""
        consumer_threads = self.consumer_warps * WARP
        rv = self.red_vec
        if tidx < consumer_threads:
            mine = parts_at + rank * (n_vec * rv)
            for v in cutlass.range(tidx, n_vec, consumer_threads, unroll=1):
                cute.make_tensor(mine + v * rv, cute.make_layout(rv)).store(vecs[(None, v)].load())
            self.count_in(workspace.iterator + tile, self.split_k, last, tidx)

    @cute.jit
    def count_in(self, counter, arrivals, last, tidx):
        """For the consumer threads, after their global stores: publish them (release) and count
        this CTA in at ``counter``; ``last[0]`` then says whether it was the last of ``arrivals``
        (the counter is reset for the next launch, which starts only after this grid completes)."""
        consumer_threads = self.consumer_warps * WARP
        cute.arch.fence_acq_rel_gpu()
        cute.arch.barrier(barrier_id=1, number_of_threads=consumer_threads)
        if tidx == 0:
            arrived = cute.arch.atomic_add(counter, Int32(1), sem="acq_rel", scope="gpu")
            is_last = Int32(0)
            if arrived == arrivals - 1:
                is_last = Int32(1)
                cute.make_tensor(counter, cute.make_layout(1))[0] = Int32(0)
            last[0] = is_last
        cute.arch.barrier(barrier_id=1, number_of_threads=consumer_threads)

    @cute.jit
    def store_slot(self, rank, tidx):
        """The first vector this consumer thread finalises and the stride to its next: across a
        cluster CTA r owns vectors r, r + split_k, ...; otherwise the CTA finalises all."""
        if cutlass.const_expr(self.uses_cluster):
            return rank + tidx * self.split_k, self.split_k * self.consumer_warps * WARP
        return tidx, self.consumer_warps * WARP

    @cute.jit
    def vector_origin(self, v, e_blk, m_blk):
        """Row in the tile, output row and first output column of vector ``v`` of the tile."""
        mi = (v * self.red_vec) // self.e_tile
        return mi, m_blk * self.m_tile + mi, e_blk * self.e_tile + v * self.red_vec - mi * self.e_tile

    @cute.jit
    def load_bias(self, bias, bias_vals, e_blk, rank, tidx):
        """The bias of each column this consumer thread will store, into ``bias_vals``."""
        n_vec = self.tile_vecs
        first, step = self.store_slot(rank, tidx)
        e_total = cute.size(bias, mode=[0])
        bias_vals.fill(0.0)
        for it in cutlass.range_constexpr(self.store_iters):
            v = first + it * step
            if v < n_vec:
                _, _, e0 = self.vector_origin(v, e_blk, 0)
                for j in cutlass.range_constexpr(self.red_vec):
                    if e0 + j < e_total:
                        bias_vals[j, it] = bias[e0 + j].to(Float32)

    @cute.jit
    def store_tile(self, vecs, n_vec, bias_vals, out, e_blk, m_blk, rank, tidx, norm, parts_at):
        """Finalise this CTA's vectors of the output tile: the partial tiles summed in rank order
        (``parts_at``: this CTA's inbox across a cluster, or the tile's partials in the workspace),
        times 1 / rms with the norm, plus the bias (``load_bias``); masked store."""
        rv = self.red_vec
        m_total = cute.size(out, mode=[0])
        e_total = cute.size(out, mode=[1])
        total = cute.make_rmem_tensor(cute.make_layout(rv), Float32)
        first, step = self.store_slot(rank, tidx)
        for it in cutlass.range_constexpr(self.store_iters):
            v = first + it * step
            if v < n_vec:
                if cutlass.const_expr(self.split_k > 1):
                    if cutlass.const_expr(self.uses_cluster):
                        slot = (v // self.split_k) * rv
                        parts = [[parts_at[p, slot + j] for j in range(rv)] for p in range(self.split_k)]
                    else:
                        parts = [load_global_cg(parts_at + p * (n_vec * rv) + v * rv, rv) for p in range(self.split_k)]
                    for j in cutlass.range_constexpr(rv):
                        acc = parts[0][j]
                        for p in cutlass.range_constexpr(1, self.split_k):
                            acc = acc + parts[p][j]
                        total[j] = acc
                else:
                    total.store(vecs[(None, v)].load())
                mi, m, e0 = self.vector_origin(v, e_blk, m_blk)
                for j in cutlass.range_constexpr(rv):
                    e = e0 + j
                    if m < m_total and e < e_total:
                        y = total[j]
                        if cutlass.const_expr(norm is not None):
                            y = y * norm.stats[1, mi]
                        if cutlass.const_expr(self.bias_dtype is not None):
                            y = y + bias_vals[j, it]
                        out[m, e] = y.to(dtype(self.out_dtype))

    @cute.jit
    def finish_rms(self, norm, h, tidx, consumer_threads, inbox=None):
        """1 / rms of each row from the cluster's partial sums of squares (fixed rank order),
        for every consumer thread to read."""
        if tidx < self.m_tile:
            q = norm.stats[0, tidx]
            if cutlass.const_expr(self.uses_cluster):
                q = inbox.stats[0, tidx]
                for p in cutlass.range_constexpr(1, self.split_k):
                    q = q + inbox.stats[p, tidx]
            norm.stats[1, tidx] = cute.math.rsqrt(q / Float32(h) + norm.eps)
        cute.arch.barrier(barrier_id=1, number_of_threads=consumer_threads)
