"""The router GEMM kernel: logits[M, E] = x[M, H] @ W[E, H]^T (+ bias), fp32 accumulation,
optionally with the RMSNorm of x fused in (``NormRouterGemmKernel``).

M is small (tokens in flight), so the kernel is a weight stream: every byte of W is read once and
used M times. The grid tiles (experts, tokens), a few experts per CTA, and splits H across CTAs
where a CTA's share would not fit in shared memory or the tiles are too few.

Roles: one producer warp requests the CTA's whole share of H at once with TMA tile copies, one
shared-memory stage per k tile ([e_tile, k_tile] of W and [m_tile, k_tile] of x), each guarded
by its own mbarrier; W does not depend on the previous kernel, so with PDL every W tile is
requested before ``griddepcontrol.wait`` and only the x tiles wait. Consumer warps
(``consumers``) turn the stages into partial tiles; the epilogue (``reduction``) sums them in a
fixed order, adds the bias, rounds once and stores. Stages are never reused: configs whose share
does not fit are refused on the host (``RouterGemm.holds_share``), which picks a smaller token
tile or a split of H instead.

Out-of-range rows/columns (partial E, M or H tiles) arrive as zeros from TMA, so only the final
store is masked. H must be a multiple of 8 (TMA needs 16-byte row strides).
"""

from typing import NamedTuple

import cutlass
import cutlass.cute as cute
from cutlass.cute.nvgpu import cpasync

from ..common import WARP
from ..dsl import allocate, dtype, fake_stream, fake_tensor, pdl_enter
from .config import NormRouterGemm, NormRouterTopk, Route, RouterGemm, RouterTopk
from .consumers import Consumers
from .reduction import Inbox, SplitKReduction
from .selection import SelectOperands, Selector

Float32, Int32 = cutlass.Float32, cutlass.Int32


class NormOperands(NamedTuple):
    """What the RMSNorm adds to the router GEMM's CTA: its weight (TMA atom and tensor), the
    normed-x output, eps, and (allocated by the CTA) their shared-memory tiles."""
    tma_atom: object
    weight: object
    normed: object
    eps: object
    s_weight: object = None
    stats: object = None


class RouterGemmKernel(Consumers, SplitKReduction, RouterGemm):
    def fake_args(self):
        m, e = cute.sym_int(), cute.sym_int()
        h = cute.sym_int(divisibility=8)
        return (
            fake_tensor(self.x_dtype, (m, h), (h, 1), 16),
            fake_tensor(self.w_dtype, (e, h), (h, 1), 16),
            # Without bias the slot takes any one-element fp32 tensor and is never read.
            fake_tensor(self.bias_dtype, (e,), (1,), 2) if self.bias_dtype else fake_tensor("float32", (1,), (1,), 4),
            fake_tensor(self.out_dtype, (m, e), (e, 1), 4),
            # The global reduction's workspace (workspace_ints); any int32 tensor when unused.
            fake_tensor("int32", (cute.sym_int(),), (1,), 16),
            fake_stream(),
        )

    def tma_atom(self, gmem, rows: int):
        """TMA tile copies of [rows, k_tile] from a row-major 2-D tensor."""
        k_tile = self.k_tile
        return cpasync.make_tiled_tma_atom(cpasync.CopyBulkTensorTileG2SOp(), gmem,
                                           cute.make_layout((rows, k_tile), stride=(k_tile, 1)), (rows, k_tile))

    def launch_args(self, x, w) -> dict:
        grid_e = cute.ceil_div(cute.size(w, mode=[0]), self.e_tile) * self.split_k
        grid_m = cute.ceil_div(cute.size(x, mode=[0]), self.m_tile)
        cluster = self.split_k if self.uses_cluster else 1
        return dict(grid=[grid_e, grid_m, 1], block=[self.threads, 1, 1], cluster=[cluster, 1, 1],
                    smem=self.smem_bytes(), use_pdl=self.pdl)

    @cute.jit
    def __call__(self, x: cute.Tensor, w: cute.Tensor, bias: cute.Tensor, out: cute.Tensor,
                 workspace: cute.Tensor, stream):
        tma_w, tma_x = self.tma_atom(w, self.e_tile), self.tma_atom(x, self.m_tile)
        self.kernel(tma_w.atom, tma_w.tma_tensor, tma_x.atom, tma_x.tma_tensor, bias, out, workspace).launch(
            stream=stream, **self.launch_args(x, w))

    @cute.kernel
    def kernel(self, tma_w_atom: cute.CopyAtom, mw: cute.Tensor, tma_x_atom: cute.CopyAtom, mx: cute.Tensor,
               bias: cute.Tensor, out: cute.Tensor, workspace: cute.Tensor):
        self.run_cta(tma_w_atom, mw, tma_x_atom, mx, bias, out, None, workspace)

    @cute.jit
    def run_cta(self, tma_w_atom, mw, tma_x_atom, mx, bias, out, norm, workspace=None, select=None):
        """One CTA: set up the stages, produce or consume, reduce and store. ``norm`` carries the
        RMSNorm operands of ``NormRouterGemm`` (None here); ``workspace`` the global reduction's
        counters and partial tiles (read only when ``uses_workspace``); ``select`` what the top-k
        selection after the store reads and writes (``RouterTopk``; None here)."""
        tidx, _, _ = cute.arch.thread_idx()
        bidx, bidy, _ = cute.arch.block_idx()
        warp = cute.arch.make_warp_uniform(tidx // WARP)
        lane = tidx % WARP
        stages = self.stages

        rank = bidx % self.split_k  # the CTA's part of H (== its rank in the cluster, if any)
        e_blk = bidx // self.split_k
        h = cute.size(mw, mode=[1])
        n_k = cute.ceil_div(h, self.k_tile)
        k_begin = (rank * n_k) // self.split_k
        k_count = ((rank + 1) * n_k) // self.split_k - k_begin

        slots = allocate(self.smem_plan())
        s_w, s_x, red, full = slots["w"], slots["x"], slots["red"], slots["full"].iterator
        if cutlass.const_expr(norm is not None):
            norm = norm._replace(s_weight=slots["norm_w"], stats=slots["stats"])
        last = slots["last"] if cutlass.const_expr(self.uses_workspace or self.selects) else None
        staged_bias = None  # the correction bias in global memory, staged into shared memory
        if cutlass.const_expr(select is not None):
            staged_bias = select.cbias
            if cutlass.const_expr(self.correction_bias):
                select = select._replace(last=last, cbias=slots["cbias"])
            else:
                select = select._replace(last=last)
        inbox = None
        if cutlass.const_expr(self.uses_cluster):
            inbox = Inbox(slots["inbox"], slots.get("inbox_stats"), slots["inbox_full"].iterator)

        if warp == 0:
            with cute.arch.elect_one():
                for s in cutlass.range_constexpr(stages):
                    cute.arch.mbarrier_init(full + s, 1)
                if cutlass.const_expr(self.uses_cluster):
                    cute.arch.mbarrier_init(inbox.full, 1)
        cute.arch.mbarrier_init_fence()
        cute.arch.sync_threads()
        if cutlass.const_expr(self.uses_cluster):
            # Peers send to this CTA's inbox only after the matching wait (reduce_and_store), so
            # its barrier is initialised by then; the wait itself is long satisfied.
            cute.arch.cluster_arrive_relaxed()

        bias_vals = None
        if cutlass.const_expr(self.bias_dtype is not None):
            bias_vals = cute.make_rmem_tensor(cute.make_layout((self.red_vec, self.store_iters)), Float32)
        if warp == self.consumer_warps:
            self.produce(tma_w_atom, mw, tma_x_atom, mx, s_w, s_x, full, e_blk, bidy, k_begin, k_count, norm)
        else:
            if cutlass.const_expr(self.bias_dtype is not None):
                # Before the wait: the bias does not depend on the previous kernel, and read at the
                # store it would add a DRAM round trip to the end of the critical path.
                self.load_bias(bias, bias_vals, e_blk, rank, tidx)
            if cutlass.const_expr(select is not None and self.correction_bias):
                # Likewise the selection's correction bias, into shared memory; the epilogue's
                # barriers order these stores before the selection reads them.
                for e in cutlass.range(tidx, self.experts, self.consumer_warps * WARP, unroll=1):
                    select.cbias[e] = staged_bias[e]
            pdl_enter(self.pdl)
            if cutlass.const_expr(self.variant == "mma"):
                self.consume_mma(s_w, s_x, red, full, warp, lane, k_count, norm)
            else:
                self.consume_dot(s_w, s_x, red, full, warp, lane, k_count, norm)

        self.reduce_and_store(red, bias_vals, out, e_blk, bidy, rank, tidx, h, norm, workspace, last, inbox)
        if cutlass.const_expr(select is not None):
            if tidx < self.consumer_warps * WARP:
                self.count_in(select.counters.iterator + bidy, self.arrivals, last, tidx)
                if last[0] != 0:  # every expert's logit of this token tile is in memory
                    cute.arch.fence_acq_rel_gpu()
                    for r in cutlass.range(warp, self.m_tile, self.consumer_warps, unroll=1):
                        if bidy * self.m_tile + r < cute.size(out, mode=[0]):
                            self.select_row(select, bidy * self.m_tile + r, lane)
        if cutlass.const_expr(norm is not None):
            self.store_normed(norm, s_x, e_blk, bidy, k_begin, k_count, tidx, h, cute.size(out, mode=[1]))

    @cute.jit
    def produce(self, tma_w_atom, mw, tma_x_atom, mx, s_w, s_x, full, e_blk, m_blk, k_begin, k_count, norm):
        k_tile = self.k_tile
        g_w = cute.local_tile(mw, (self.e_tile, k_tile), (e_blk, None))  # (e_tile, k_tile, n_k)
        g_x = cute.local_tile(mx, (self.m_tile, k_tile), (m_blk, None))
        t_sw, t_gw = cpasync.tma_partition(tma_w_atom, 0, cute.make_layout(1),
                                           cute.group_modes(s_w, 0, 2), cute.group_modes(g_w, 0, 2))
        t_sx, t_gx = cpasync.tma_partition(tma_x_atom, 0, cute.make_layout(1),
                                           cute.group_modes(s_x, 0, 2), cute.group_modes(g_x, 0, 2))
        t_sn, t_gn = None, None
        if cutlass.const_expr(norm is not None):
            g_n = cute.local_tile(norm.weight, (1, k_tile), (0, None))
            t_sn, t_gn = cpasync.tma_partition(norm.tma_atom, 0, cute.make_layout(1),
                                               cute.group_modes(norm.s_weight, 0, 2), cute.group_modes(g_n, 0, 2))
            cpasync.prefetch_descriptor(norm.tma_atom)
        stage_bytes = self.stage_bytes
        cpasync.prefetch_descriptor(tma_w_atom)
        cpasync.prefetch_descriptor(tma_x_atom)
        first = cutlass.min(k_count, self.stages)  # == k_count: the host checks holds_share
        # Weights first: they do not depend on the previous kernel, so with PDL they stream
        # while it finishes. Each stage's barrier expects all of its k tile's bytes together.
        for i in cutlass.range(first, unroll=1):
            with cute.arch.elect_one():
                cute.arch.mbarrier_arrive_and_expect_tx(full + i, stage_bytes)
            cute.copy(tma_w_atom, t_gw[(None, k_begin + i)], t_sw[(None, i)], tma_bar_ptr=full + i)
            if cutlass.const_expr(norm is not None):
                cute.copy(norm.tma_atom, t_gn[(None, k_begin + i)], t_sn[(None, i)], tma_bar_ptr=full + i)
        pdl_enter(self.pdl)
        for i in cutlass.range(first, unroll=1):
            cute.copy(tma_x_atom, t_gx[(None, k_begin + i)], t_sx[(None, i)], tma_bar_ptr=full + i)

    @cute.jit
    def store_normed(self, norm, s_x, e_blk, m_blk, k_begin, k_count, tidx, h, e_total):
        """normed_x = x * (1 / rms) * norm_weight for this CTA's columns, from the x tiles still
        resident in shared memory. The expert-tile CTAs that share those columns split the
        16-byte chunks between them."""
        consumer_threads = self.consumer_warps * WARP
        vec = self.w_vec
        if tidx < consumer_threads:
            n_e_blk = cute.ceil_div(e_total, self.e_tile)
            per_tile = self.k_tile // vec
            per_row = k_count * per_tile  # vec-wide chunks of one row in this CTA's columns
            m_total = cute.size(norm.normed, mode=[0])
            for j in cutlass.range(e_blk * consumer_threads + tidx, self.m_tile * per_row,
                                   n_e_blk * consumer_threads, unroll=1):
                mi = j // per_row
                i = (j - mi * per_row) // per_tile
                c = j % per_tile
                m = m_blk * self.m_tile + mi
                col = (k_begin + i) * self.k_tile + c * vec
                if m < m_total and col < h:
                    xv = cute.zipped_divide(s_x[(mi, None, i)], (vec,))[(None, c)].load().to(Float32)
                    nv = cute.zipped_divide(norm.s_weight[(0, None, i)], (vec,))[(None, c)].load().to(Float32)
                    y = xv * norm.stats[1, mi] * nv
                    row = cute.zipped_divide(norm.normed[(m, None)], (vec,))
                    row[(None, col // vec)].store(y.to(dtype(self.x_dtype)))


class NormRouterGemmKernel(NormRouterGemm, RouterGemmKernel):
    def fake_args(self):
        m, e = cute.sym_int(), cute.sym_int()
        h = cute.sym_int(divisibility=8)
        return (
            fake_tensor(self.x_dtype, (m, h), (h, 1), 16),
            fake_tensor(self.w_dtype, (e, h), (h, 1), 16),
            fake_tensor(self.norm_dtype, (1, h), (h, 1), 16),
            fake_tensor(self.out_dtype, (m, e), (e, 1), 4),
            fake_tensor(self.x_dtype, (m, h), (h, 1), 16),
            Float32(1e-6),
            fake_stream(),
        )

    @cute.jit
    def __call__(self, x: cute.Tensor, w: cute.Tensor, norm_weight: cute.Tensor, out: cute.Tensor,
                 normed: cute.Tensor, eps: Float32, stream):
        tma_w, tma_x = self.tma_atom(w, self.e_tile), self.tma_atom(x, self.m_tile)
        tma_n = self.tma_atom(norm_weight, 1)
        self.kernel(tma_w.atom, tma_w.tma_tensor, tma_x.atom, tma_x.tma_tensor, tma_n.atom, tma_n.tma_tensor,
                    out, normed, eps).launch(stream=stream, **self.launch_args(x, w))

    @cute.kernel
    def kernel(self, tma_w_atom: cute.CopyAtom, mw: cute.Tensor, tma_x_atom: cute.CopyAtom, mx: cute.Tensor,
               tma_n_atom: cute.CopyAtom, mn: cute.Tensor, out: cute.Tensor, normed: cute.Tensor, eps: Float32):
        # No bias: the slot is never read, any tensor fills it.
        self.run_cta(tma_w_atom, mw, tma_x_atom, mx, out, out, NormOperands(tma_n_atom, mn, normed, eps))


class RouterTopkKernel(Selector, RouterTopk, RouterGemmKernel):
    """The router GEMM with each token's top-k chosen after it (``selection``)."""

    def fake_args(self):
        m, h = cute.sym_int(), cute.sym_int(divisibility=8)
        return (
            fake_tensor(self.x_dtype, (m, h), (h, 1), 16),
            fake_tensor(self.w_dtype, (self.experts, h), (h, 1), 16),
            fake_tensor(self.bias_dtype, (self.experts,), (1,), 2) if self.bias_dtype else fake_tensor(
                "float32", (1,), (1,), 4),
            *self.select_fake_args(),
            fake_stream(),
        )

    def select_fake_args(self):
        """The logits' room (fp32, at least M * E: the caller's logits_out or a workspace), the
        arrival counters (int32), the correction bias (any fp32 tensor without one), weights and
        ids (the weights any fp32 [., k] tensor when packed), the scaling."""
        rows, k = cute.sym_int(), self.top_k
        return (
            fake_tensor("float32", (cute.sym_int(),), (1,), 16),
            fake_tensor("int32", (cute.sym_int(),), (1,), 16),
            fake_tensor("float32", (self.experts,), (1,), 4) if self.correction_bias else fake_tensor(
                "float32", (1,), (1,), 4),
            fake_tensor("float32", (cute.sym_int(),) if self.packed else (rows, k), (1,) if self.packed else (k, 1),
                        4),
            fake_tensor("int32", (rows, k), (k, 1), 4),
            Float32(1.0),
        )

    def logits_tensor(self, logits, x):
        """The [M, E] view of the logits' room."""
        return cute.make_tensor(logits.iterator, cute.make_layout((cute.size(x, mode=[0]), self.experts),
                                                                  stride=(self.experts, 1)))

    @cute.jit
    def __call__(self, x: cute.Tensor, w: cute.Tensor, bias: cute.Tensor, logits: cute.Tensor,
                 counters: cute.Tensor, cbias: cute.Tensor, weights: cute.Tensor, ids: cute.Tensor,
                 scaling: Float32, stream):
        tma_w, tma_x = self.tma_atom(w, self.e_tile), self.tma_atom(x, self.m_tile)
        self.kernel(tma_w.atom, tma_w.tma_tensor, tma_x.atom, tma_x.tma_tensor, bias, self.logits_tensor(logits, x),
                    counters, cbias, weights, ids, scaling).launch(stream=stream, **self.launch_args(x, w))

    @cute.kernel
    def kernel(self, tma_w_atom: cute.CopyAtom, mw: cute.Tensor, tma_x_atom: cute.CopyAtom, mx: cute.Tensor,
               bias: cute.Tensor, logits: cute.Tensor, counters: cute.Tensor, cbias: cute.Tensor,
               weights: cute.Tensor, ids: cute.Tensor, scaling: Float32):
        self.run_cta(tma_w_atom, mw, tma_x_atom, mx, bias, logits, None,
                     select=SelectOperands(logits, cbias, weights, ids, scaling, counters))


class NormRouterTopkKernel(NormRouterTopk, NormRouterGemmKernel, RouterTopkKernel):
    """The fused RMSNorm + router GEMM with each token's top-k chosen after it."""

    def fake_args(self):
        m, h = cute.sym_int(), cute.sym_int(divisibility=8)
        return (
            fake_tensor(self.x_dtype, (m, h), (h, 1), 16),
            fake_tensor(self.w_dtype, (self.experts, h), (h, 1), 16),
            fake_tensor(self.norm_dtype, (1, h), (h, 1), 16),
            fake_tensor(self.x_dtype, (m, h), (h, 1), 16),
            Float32(1e-6),
            *self.select_fake_args(),
            fake_stream(),
        )

    @cute.jit
    def __call__(self, x: cute.Tensor, w: cute.Tensor, norm_weight: cute.Tensor, normed: cute.Tensor, eps: Float32,
                 logits: cute.Tensor, counters: cute.Tensor, cbias: cute.Tensor, weights: cute.Tensor,
                 ids: cute.Tensor, scaling: Float32, stream):
        tma_w, tma_x = self.tma_atom(w, self.e_tile), self.tma_atom(x, self.m_tile)
        tma_n = self.tma_atom(norm_weight, 1)
        self.kernel(tma_w.atom, tma_w.tma_tensor, tma_x.atom, tma_x.tma_tensor, tma_n.atom, tma_n.tma_tensor,
                    normed, eps, self.logits_tensor(logits, x), counters, cbias, weights, ids, scaling).launch(
            stream=stream, **self.launch_args(x, w))

    @cute.kernel
    def kernel(self, tma_w_atom: cute.CopyAtom, mw: cute.Tensor, tma_x_atom: cute.CopyAtom, mx: cute.Tensor,
               tma_n_atom: cute.CopyAtom, mn: cute.Tensor, normed: cute.Tensor, eps: Float32, logits: cute.Tensor,
               counters: cute.Tensor, cbias: cute.Tensor, weights: cute.Tensor, ids: cute.Tensor, scaling: Float32):
        # No bias: the slot is never read, any tensor fills it.
        self.run_cta(tma_w_atom, mw, tma_x_atom, mx, logits, logits, NormOperands(tma_n_atom, mn, normed, eps),
                     select=SelectOperands(logits, cbias, weights, ids, scaling, counters))


class RouteKernel(Selector, Route):
    """Scoring and top-k from fp32 logits written by an earlier kernel: one warp per token."""

    def fake_args(self):
        m, k = cute.sym_int(), self.top_k
        return (
            fake_tensor("float32", (m, self.experts), (self.experts, 1), 4),
            fake_tensor("float32", (self.experts,), (1,), 4) if self.correction_bias else fake_tensor(
                "float32", (1,), (1,), 4),
            fake_tensor("float32", (cute.sym_int(),) if self.packed else (m, k), (1,) if self.packed else (k, 1), 4),
            fake_tensor("int32", (m, k), (k, 1), 4),
            Float32(1.0),
            fake_stream(),
        )

    @cute.jit
    def __call__(self, logits: cute.Tensor, cbias: cute.Tensor, weights: cute.Tensor, ids: cute.Tensor,
                 scaling: Float32, stream):
        blocks = cute.ceil_div(cute.size(logits, mode=[0]), self.warps)
        self.kernel(logits, cbias, weights, ids, scaling).launch(
            grid=[blocks, 1, 1], block=[self.warps * WARP, 1, 1], stream=stream, use_pdl=self.pdl)

    @cute.kernel
    def kernel(self, logits: cute.Tensor, cbias: cute.Tensor, weights: cute.Tensor, ids: cute.Tensor,
               scaling: Float32):
        tidx, _, _ = cute.arch.thread_idx()
        bidx, _, _ = cute.arch.block_idx()
        pdl_enter(self.pdl)
        row = bidx * self.warps + tidx // WARP
        if row < cute.size(logits, mode=[0]):
            self.select_row(SelectOperands(logits, cbias, weights, ids, scaling), row, tidx % WARP)


KERNELS = {RouterGemm: RouterGemmKernel, NormRouterGemm: NormRouterGemmKernel, RouterTopk: RouterTopkKernel,
           NormRouterTopk: NormRouterTopkKernel, Route: RouteKernel}
