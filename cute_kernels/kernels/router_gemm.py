"""Router GEMM: logits[M, E] = x[M, H] @ W[E, H]^T (+ bias), fp32 accumulation.

M is small (tokens in flight), so the kernel is a weight stream: every byte of W is read once and
used M times. The grid tiles (experts, tokens), a few experts per CTA (E = 256 at 2 per CTA: 128
CTAs each streaming 28 KB), and splits H across CTAs where a CTA's share would not fit in shared
memory or the tiles are too few (the mma variant's 16- and 32-expert tiles):

- One producer warp requests the CTA's whole share of H at once with TMA tile copies: one
  shared-memory stage per k tile, holding a [e_tile, k_tile] slice of W and the matching
  [m_tile, k_tile] slice of x, guarded by its own mbarrier. Stages are never reused: a ring that
  wrapped (refilling a stage once its consumers released it) gave wrong sums on the H100 for
  some configs, a race not yet understood, so configs whose share does not fit are refused
  (the host picks a smaller token tile or a split of H instead). W does not depend on the
  previous kernel, so with PDL every W tile is requested before ``griddepcontrol.wait``; only
  the x tiles wait.
- Consumer warps turn each stage into partial sums, by one of two variants:
  ``dot``: CUDA-core dot products in fp32 (any dtype pair, fp32 weights stay fp32); warps take
  whole k tiles in turn (warp w: tiles w, w + W, ...) for every expert and token of the CTA, so
  a CTA's tiles are consumed W at a time, lanes own 16-byte column chunks, a butterfly sums the
  lanes.
  ``mma``: tensor cores (mma.sync m16n8k16, bf16/fp16 in, fp32 accumulate) with experts as the
  MMA's M dimension (swap-AB) so one token still fills an 8-wide N; warps own 32-column chunks
  (an odd number of warps makes a stage row an odd multiple of 64 bytes, so a quarter-warp's
  fragment loads from two rows hit disjoint shared-memory banks).
  fp32 weights (with bf16 x) enter as three bf16 parts that sum to each weight exactly, one MMA
  per part, so the products are the fp32 ones.
- Each warp leaves one partial tile; the warps' tiles are summed in shared memory.
- CTAs that split H (split_k > 1) combine their partial tiles in a fixed rank order, so results
  are bitwise-deterministic, by one of two means (``reduce``): across a thread-block cluster,
  CTA r finalises every split_k-th vector of the tile, and each CTA sends those vectors of its
  partial tile to CTA r's inbox in distributed shared memory (``st.async``, counted by the
  inbox's mbarrier: no cluster-wide barrier after the start, no remote reads); or through a global
  workspace, each CTA writes its tile and counts itself in at the tile's arrival counter, and
  the last to arrive sums all of them (the counter only elects that CTA; no atomic touches a
  sum). Then the bias, one rounding and the store.

Out-of-range rows/columns (partial E, M or H tiles) arrive as zeros from TMA, so only the final
store is masked. H must be a multiple of 8 (TMA needs 16-byte row strides).
"""

import itertools
from dataclasses import dataclass
from typing import NamedTuple

from .common import WIDTHS, dtype, fake_stream, fake_tensor
from .dsl import T, cpasync, cute, cutlass, dsl_user_op, llvm

Float32, Int32 = cutlass.Float32, cutlass.Int32

VARIANTS = ("dot", "mma")
REDUCES = ("cluster", "global")
# int32 arrival counters at the head of a global-reduce workspace, one per output tile; fp32
# partial tiles follow. The counters are zero between launches (the last CTA of a tile resets
# its own), so the region has a fixed size and is zeroed once, when the workspace is made.
WORKSPACE_COUNTERS = 8192
WARP = 32
VEC_BYTES = 16
TMA_ALIGN = 128  # bytes: the shared-memory address of every TMA tile
MMA_K = 32  # columns one warp consumes per step: two m16n8k16 MMAs
# (x, weight) dtypes the tensor cores take. fp32 weights enter as three bf16 parts whose sum is
# the weight exactly (``split_bf16``), so the products are those of the fp32 weights.
MMA_DTYPES = (("bfloat16", "bfloat16"), ("float16", "float16"), ("bfloat16", "float32"))


@dataclass(frozen=True)
class RouterGemm:
    x_dtype: str  # "bfloat16" | "float16" | "float32"
    w_dtype: str  # "bfloat16" | "float16" | "float32"
    out_dtype: str  # "float32" | "bfloat16"
    bias_dtype: str | None  # None (no bias) or a float dtype name
    variant: str  # "dot" | "mma"
    e_tile: int  # experts per CTA
    m_tile: int  # tokens per CTA
    split_k: int  # CTAs along H, each taking 1/split_k of it
    stages: int  # shared-memory stages: at least the k tiles of one CTA's share of H
    pdl: bool
    consumer_warps: int = 4
    # How split_k > 1 CTAs combine their partial tiles: "cluster" (the CTAs form a thread-block
    # cluster and send each part of their tile to the CTA that finishes it, through DSMEM) or
    # "global" (each writes its tile to a workspace; the last to arrive at the tile's counter
    # sums them).
    reduce: str = "cluster"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}; got {self.variant!r}")
        if self.variant == "mma":
            if (self.x_dtype, self.w_dtype) not in MMA_DTYPES:
                raise ValueError("the mma variant needs x and weight both bfloat16 or both float16, or bfloat16 x "
                                 "with float32 weights")
            if self.e_tile % 16 or self.m_tile % 8:
                raise ValueError("the mma variant tiles experts by 16 and tokens by 8")
        if self.e_tile < 1 or self.consumer_warps < 1:
            raise ValueError("e_tile and consumer_warps must be >= 1")
        if self.reduce not in REDUCES:
            raise ValueError(f"reduce must be one of {REDUCES}; got {self.reduce!r}")
        if self.reduce == "cluster" and not 1 <= self.split_k <= 8:
            raise ValueError("split_k across a cluster is a portable cluster size: 1 to 8")
        if not 1 <= self.split_k <= 64:
            raise ValueError("split_k must be 1 to 64")

    @property
    def uses_cluster(self) -> bool:
        return self.split_k > 1 and self.reduce == "cluster"

    @property
    def uses_workspace(self) -> bool:
        return self.split_k > 1 and self.reduce == "global"

    def workspace_ints(self, m: int, e: int) -> int:
        """int32 words of workspace a launch needs (0 without a global reduction): the counter
        region, then one fp32 partial tile per (output tile, split rank)."""
        if not self.uses_workspace:
            return 0
        return WORKSPACE_COUNTERS + self.output_tiles(m, e) * self.split_k * self.m_tile * self.e_tile

    def output_tiles(self, m: int, e: int) -> int:
        return -(-e // self.e_tile) * -(-m // self.m_tile)

    @property
    def k_tile(self) -> int:
        """Columns of H per stage: a 16-byte chunk per lane (dot) or 32 columns per warp (mma)."""
        if self.variant == "mma":
            return MMA_K * self.consumer_warps
        return WARP * self.w_vec

    @property
    def w_vec(self) -> int:
        return VEC_BYTES * 8 // WIDTHS[self.w_dtype]

    @property
    def w_parts(self) -> int:
        """bf16 parts each weight enters the tensor cores as: 3 for fp32 weights (24 significant
        bits), else 1."""
        return 3 if self.w_dtype == "float32" else 1

    @property
    def threads(self) -> int:
        return (self.consumer_warps + 1) * WARP  # + the producer warp

    @property
    def red_slices(self) -> int:
        """Partial tiles per CTA: each consumer warp covers every (token, expert) of the tile."""
        return self.consumer_warps

    @property
    def red_vec(self) -> int:
        """fp32 values the epilogue moves per access: the widest of 4, 2, 1 dividing e_tile."""
        return 4 if self.e_tile % 4 == 0 else 2 if self.e_tile % 2 == 0 else 1

    def k_tiles_per_cta(self, h: int) -> int:
        return -(-(-(-h // self.k_tile)) // self.split_k)

    def holds_share(self, h: int) -> bool:
        """Every k tile of a CTA's share of H has its own stage (the kernel never reuses one)."""
        return self.stages >= self.k_tiles_per_cta(h)

    @property
    def w_tile_bytes(self) -> int:
        return self.k_tile * self.e_tile * WIDTHS[self.w_dtype] // 8

    @property
    def x_tile_bytes(self) -> int:
        """Bytes of the activation-side operands of one k tile."""
        return self.k_tile * self.m_tile * WIDTHS[self.x_dtype] // 8

    @property
    def x_slots(self) -> int:
        """Shared-memory slots for x tiles: x shares each stage with W here."""
        return self.stages

    @property
    def stage_bytes(self) -> int:
        """Bytes one stage's barrier expects by TMA: a W tile and an x tile."""
        return self.w_tile_bytes + self.x_tile_bytes

    @property
    def smem_per_stage(self) -> int:
        """Shared memory per stage: its TMA tiles and its mbarrier."""
        return self.stage_bytes + 8

    @property
    def red_bytes(self) -> int:
        """The fp32 partial tiles the epilogue reduces."""
        return self.red_slices * self.m_tile * self.e_tile * 4

    @property
    def tile_vecs(self) -> int:
        """``red_vec``-float vectors in one output tile: the unit of the reduction and the store."""
        return self.m_tile * self.e_tile // self.red_vec

    @property
    def owned_vecs(self) -> int:
        """Across a cluster, CTA r finalises vectors r, r + split_k, ...: at most this many."""
        return -(-self.tile_vecs // self.split_k)

    @property
    def inbox_bytes(self) -> int:
        """Across a cluster, the partials every peer sends this CTA: one slot of its owned
        vectors per rank."""
        return self.split_k * self.owned_vecs * self.red_vec * 4 if self.uses_cluster else 0

    @property
    def fixed_smem(self) -> int:
        """Shared memory that does not grow with ``stages``: the partial tiles; across a cluster
        the inbox and its barrier; with the global reduction the flag that says whether this CTA
        finishes the tile; 16 bytes for the padding between them."""
        return (self.red_bytes + self.inbox_bytes + (8 if self.uses_cluster else 0)
                + (8 if self.uses_workspace else 0) + 16)

    def smem_bytes(self) -> int:
        return self.stages * self.smem_per_stage + self.fixed_smem

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
    def run_cta(self, tma_w_atom, mw, tma_x_atom, mx, bias, out, norm, workspace=None):
        """One CTA: set up the stages, produce or consume, reduce and store. ``norm`` carries the
        RMSNorm operands of ``NormRouterGemm`` (None here); ``workspace`` the global reduction's
        counters and partial tiles (read only when ``uses_workspace``)."""
        tidx, _, _ = cute.arch.thread_idx()
        bidx, bidy, _ = cute.arch.block_idx()
        warp = cute.arch.make_warp_uniform(tidx // WARP)
        lane = tidx % WARP
        k_tile, stages = self.k_tile, self.stages

        rank = bidx % self.split_k  # the CTA's part of H (== its rank in the cluster, if any)
        e_blk = bidx // self.split_k
        h = cute.size(mw, mode=[1])
        n_k = cute.ceil_div(h, k_tile)
        k_begin = (rank * n_k) // self.split_k
        k_count = ((rank + 1) * n_k) // self.split_k - k_begin

        smem = cutlass.utils.SmemAllocator()
        s_w = smem.allocate_tensor(dtype(self.w_dtype), cute.make_layout(
            (self.e_tile, k_tile, stages), stride=(k_tile, 1, self.e_tile * k_tile)), TMA_ALIGN)
        s_x = smem.allocate_tensor(dtype(self.x_dtype), cute.make_layout(
            (self.m_tile, k_tile, self.x_slots), stride=(k_tile, 1, self.m_tile * k_tile)), TMA_ALIGN)
        if cutlass.const_expr(norm is not None):
            norm = norm._replace(
                s_weight=smem.allocate_tensor(dtype(self.norm_dtype), cute.make_layout(
                    (1, k_tile, self.x_slots), stride=(k_tile, 1, self.norm_slot)), TMA_ALIGN),
                # [0, m]: this CTA's partial sum of x[m, :]^2; [1, m]: the row's 1 / rms;
                # [2 + w, m]: consumer warp w's share of [0, m] (mma: warps split the columns).
                stats=smem.allocate_tensor(Float32, cute.make_layout(
                    (2 + self.consumer_warps, self.m_tile), stride=(self.m_tile, 1)), 16))
        red = smem.allocate_tensor(Float32, cute.make_layout(
            (self.red_slices, self.m_tile, self.e_tile),
            stride=(self.m_tile * self.e_tile, self.e_tile, 1)), 16)
        full = smem.allocate_array(cutlass.Int64, stages, byte_alignment=8)
        last = smem.allocate_array(Int32, 1, byte_alignment=4) if cutlass.const_expr(self.uses_workspace) else None
        inbox = None
        if cutlass.const_expr(self.uses_cluster):
            inbox = Inbox(
                parts=smem.allocate_tensor(Float32, cute.make_layout(
                    (self.split_k, self.owned_vecs * self.red_vec), stride=(self.owned_vecs * self.red_vec, 1)), 16),
                stats=smem.allocate_tensor(Float32, cute.make_layout(
                    (self.split_k, self.m_tile), stride=(self.m_tile, 1)), 16) if cutlass.const_expr(
                    norm is not None) else None,
                full=smem.allocate_array(cutlass.Int64, 1, byte_alignment=8))

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
            if cutlass.const_expr(self.pdl):
                cute.arch.griddepcontrol_wait()
                cute.arch.griddepcontrol_launch_dependents()
            if cutlass.const_expr(self.variant == "mma"):
                self.consume_mma(s_w, s_x, red, full, warp, lane, k_count, norm)
            else:
                self.consume_dot(s_w, s_x, red, full, warp, lane, k_count, norm)

        self.reduce_and_store(red, bias_vals, out, e_blk, bidy, rank, tidx, h, norm, workspace, last, inbox)
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
        if cutlass.const_expr(self.pdl):
            cute.arch.griddepcontrol_wait()
            cute.arch.griddepcontrol_launch_dependents()
        for i in cutlass.range(first, unroll=1):
            cute.copy(tma_x_atom, t_gx[(None, k_begin + i)], t_sx[(None, i)], tma_bar_ptr=full + i)

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
        (the fused kernel's M = 16 went 4.67 -> 4.31 us when its parts were split apart).
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
        flat = cute.make_tensor(red.iterator, cute.make_layout(self.red_slices * n_vec * rv))
        vecs = cute.zipped_divide(flat, (rv,))  # (rv, slices * n_vec)
        if cutlass.const_expr(self.red_slices > 1 or norm is not None or self.uses_cluster):
            if tidx < consumer_threads:  # whole warps: the producer warp must not join this barrier
                cute.arch.barrier(barrier_id=1, number_of_threads=consumer_threads)
                if cutlass.const_expr(self.red_slices > 1):
                    for v in cutlass.range(tidx, n_vec, consumer_threads, unroll=1):
                        acc = vecs[(None, v)].load()
                        for sl in cutlass.range_constexpr(1, self.red_slices):
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
        it in at the tile's counter (release); ``last[0]`` says whether it was the tile's last (then
        the counter is reset for the next launch, which starts only after this grid completes)."""
        consumer_threads = self.consumer_warps * WARP
        rv = self.red_vec
        if tidx < consumer_threads:
            mine = parts_at + rank * (n_vec * rv)
            for v in cutlass.range(tidx, n_vec, consumer_threads, unroll=1):
                cute.make_tensor(mine + v * rv, cute.make_layout(rv)).store(vecs[(None, v)].load())
            cute.arch.fence_acq_rel_gpu()
            cute.arch.barrier(barrier_id=1, number_of_threads=consumer_threads)
            if tidx == 0:
                arrived = cute.arch.atomic_add(workspace.iterator + tile, Int32(1), sem="acq_rel", scope="gpu")
                is_last = Int32(0)
                if arrived == self.split_k - 1:
                    is_last = Int32(1)
                    workspace[tile] = Int32(0)
                last[0] = is_last
            cute.arch.barrier(barrier_id=1, number_of_threads=consumer_threads)

    @property
    def store_iters(self) -> int:
        """Vectors of the output tile one consumer thread finalises, at most (``store_slot``)."""
        step = self.consumer_warps * WARP * (self.split_k if self.uses_cluster else 1)
        return -(-self.tile_vecs // step)

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


class Inbox(NamedTuple):
    """Across a cluster, what the peers send a CTA: ``parts`` [split_k, owned vectors], the
    split ranks' shares of the vectors it finalises; ``stats`` [split_k, m_tile], their sums of
    squares (fused norm only); ``full``, the mbarrier their bytes complete on."""
    parts: object
    stats: object
    full: object


class NormOperands(NamedTuple):
    """What the RMSNorm adds to the router GEMM's CTA: its weight (TMA atom and tensor), the
    normed-x output, eps, and (allocated by the CTA) their shared-memory tiles."""
    tma_atom: object
    weight: object
    normed: object
    eps: object
    s_weight: object = None
    stats: object = None


@dataclass(frozen=True, kw_only=True)
class NormRouterGemm(RouterGemm):
    """RMSNorm fused into the router GEMM (the ``dot`` variant): ``normed = x * r * norm_weight``
    and ``logits = r * (x * norm_weight) @ W^T`` with ``r = 1 / sqrt(mean(x^2) + eps)``, all
    in fp32, so the logits use the unrounded normed values. The sum of squares rides the dot
    loop and the cluster reduction; each CTA's x (and norm-weight) tiles stay in their stages
    (one per k tile of its share, as in the router) to write normed x once r is known."""

    norm_dtype: str  # the norm weight's dtype

    def __post_init__(self):
        super().__post_init__()
        if self.bias_dtype is not None:
            raise ValueError("the fused norm runs without bias")
        if self.variant == "mma" and not self.x_dtype == self.norm_dtype == self.w_dtype == "bfloat16":
            raise ValueError("the fused norm's mma variant needs bf16 x, norm weight and gate weight "
                             "(x * norm_weight must split exactly into two bf16 halves)")
        if WIDTHS[self.x_dtype] != 16:
            raise ValueError("the fused norm takes bfloat16 or float16 x")
        if self.uses_workspace:
            raise ValueError("the fused norm splits H across a cluster only: every CTA needs the row's rms "
                             "to write its columns of normed x")

    @property
    def x_tile_bytes(self) -> int:
        return self.k_tile * (self.m_tile * WIDTHS[self.x_dtype] + WIDTHS[self.norm_dtype]) // 8

    @property
    def norm_slot(self) -> int:
        """Elements from one norm-weight tile to the next: a TMA destination must be 128-byte
        aligned, and with an odd number of mma warps one row of a k tile is an odd multiple of
        64 bytes."""
        width = WIDTHS[self.norm_dtype] // 8
        return -(-self.k_tile * width // TMA_ALIGN) * TMA_ALIGN // width

    @property
    def smem_per_stage(self) -> int:
        return super().smem_per_stage + (self.norm_slot - self.k_tile) * WIDTHS[self.norm_dtype] // 8

    @property
    def fixed_smem(self) -> int:
        stats = (2 + self.consumer_warps) * self.m_tile * 4
        stats_inbox = self.split_k * self.m_tile * 4 if self.uses_cluster else 0
        return super().fixed_smem + stats + stats_inbox + 128  # + the tiles' alignment

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


def warp_sum(v):
    """The sum of ``v`` over the warp's lanes, in every lane (butterfly, fixed order)."""
    offset = WARP // 2
    while offset >= 1:  # unrolled at trace time
        v = v + cute.arch.shuffle_sync_bfly(v, offset=offset)
        offset //= 2
    return v



@dsl_user_op
def mma_m16n8k16(ab_dtype: str, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3, *, loc=None, ip=None):
    """One warp-wide ``mma.sync.m16n8k16`` (bf16/fp16 in, fp32 accumulate): D = A B + C."""
    kind = {"bfloat16": "bf16", "float16": "f16"}[ab_dtype]
    ins = [Int32(v).ir_value(loc=loc, ip=ip) for v in (a0, a1, a2, a3, b0, b1)]
    ins += [Float32(v).ir_value(loc=loc, ip=ip) for v in (c0, c1, c2, c3)]
    res = llvm.inline_asm(
        llvm.StructType.get_literal([T.f32()] * 4), ins,
        f"mma.sync.aligned.m16n8k16.row.col.f32.{kind}.{kind}.f32 "
        "{$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, {$10, $11, $12, $13};",
        "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f", has_side_effects=False, is_align_stack=False,
        asm_dialect=llvm.AsmDialect.AD_ATT, loc=loc, ip=ip)
    return [Float32(llvm.extractvalue(T.f32(), res, [i], loc=loc, ip=ip)) for i in range(4)]


@dsl_user_op
def split_bf16(p0, p1, parts: int, *, loc=None, ip=None):
    """Two fp32 values of at most 8 x ``parts`` significant bits as ``parts`` packed bf16 pairs
    (largest first) that sum to them exactly: each part but the last keeps the top 8 significant
    bits of what is left (the fp32 encoding's upper half, truncated) and leaves an exact
    remainder; the last part is the final remainder, whose upper half is then exact too. Two
    parts take a product of two bf16 numbers, three any fp32 value. Bit operations and exact
    subtractions only: rounding conversions cost several times more issue slots."""
    ins = [Float32(v).ir_value(loc=loc, ip=ip) for v in (p0, p1)]
    cut, rest = [], [f"${parts}", f"${parts + 1}"]
    for k in range(parts - 1):
        for j in range(2):
            cut.append(f"and.b32 h{k}{j}, {rest[j]}, 0xFFFF0000; sub.f32 r{k}{j}, {rest[j]}, h{k}{j};")
        rest = [f"r{k}0", f"r{k}1"]
    pairs = [f"{k}{j}" for k in range(parts - 1) for j in range(2)]
    packs = [f"prmt.b32 ${k}, h{k}0, h{k}1, 0x7632;" for k in range(parts - 1)]
    packs.append(f"prmt.b32 ${parts - 1}, {rest[0]}, {rest[1]}, 0x7632;")
    asm = ("{ .reg .b32 " + ", ".join("h" + p for p in pairs) + "; .reg .f32 " + ", ".join("r" + p for p in pairs)
           + ";\n" + "\n".join(cut + packs) + " }")
    res = llvm.inline_asm(
        llvm.StructType.get_literal([T.i32()] * parts), ins, asm, ",".join(["=r"] * parts) + ",f,f",
        has_side_effects=False, is_align_stack=False, asm_dialect=llvm.AsmDialect.AD_ATT, loc=loc, ip=ip)
    return [Int32(llvm.extractvalue(T.i32(), res, [i], loc=loc, ip=ip)) for i in range(parts)]


@dsl_user_op
def send_dsmem(ptr, rank, values, mbar, *, loc=None, ip=None):
    """``st.async`` of 1, 2 or 4 fp32 ``values`` to shared-memory pointer ``ptr`` (aligned to
    4 n bytes) of the cluster's CTA ``rank``; their bytes complete on that CTA's mbarrier
    ``mbar`` (the same offset in its shared memory)."""
    n = len(values)
    dsmem = lambda p: Int32(cute.arch.map_dsmem_ptr(p, rank, loc=loc, ip=ip).toint(loc=loc, ip=ip))  # noqa: E731
    ins = [dsmem(ptr).ir_value(loc=loc, ip=ip), dsmem(mbar).ir_value(loc=loc, ip=ip)]
    ins += [Float32(v).ir_value(loc=loc, ip=ip) for v in values]
    shape, regs = ("", "$2") if n == 1 else (f".v{n}", "{" + ", ".join(f"${i + 2}" for i in range(n)) + "}")
    llvm.inline_asm(None, ins, f"st.async.shared::cluster.mbarrier::complete_tx::bytes{shape}.f32 [$0], {regs}, [$1];",
                    "r,r," + ",".join(["f"] * n), has_side_effects=True, is_align_stack=False,
                    asm_dialect=llvm.AsmDialect.AD_ATT, loc=loc, ip=ip)


@dsl_user_op
def load_global_cg(ptr, n: int, *, loc=None, ip=None):
    """The ``n`` (1, 2 or 4) fp32 at global pointer ``ptr`` (aligned to 4 n bytes), read from L2
    (other CTAs of this grid wrote them)."""
    regs = ", ".join(f"${i}" for i in range(n))
    shape, dst = ("", regs) if n == 1 else (f".v{n}", "{" + regs + "}")
    # Side effects: keeps the load below the fence that publishes the data.
    res = llvm.inline_asm(llvm.StructType.get_literal([T.f32()] * n) if n > 1 else T.f32(),
                          [ptr.toint(loc=loc, ip=ip).ir_value(loc=loc, ip=ip)],
                          f"ld.global.cg{shape}.f32 {dst}, [${n}];", ",".join(["=f"] * n) + ",l",
                          has_side_effects=True, is_align_stack=False, asm_dialect=llvm.AsmDialect.AD_ATT,
                          loc=loc, ip=ip)
    if n == 1:
        return [Float32(res)]
    return [Float32(llvm.extractvalue(T.f32(), res, [i], loc=loc, ip=ip)) for i in range(n)]
