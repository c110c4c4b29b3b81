"""Router GEMM: logits[M, E] = x[M, H] @ W[E, H]^T (+ bias), fp32 accumulation.

M is small (tokens in flight), so the kernel is a weight stream: every byte of W is read once and
used M times. The grid tiles (experts, tokens) and splits H across the CTAs of a thread-block
cluster, so even E = 256 gives ~128 CTAs each streaming ~28 KB:

- One producer warp fills a ring of shared-memory stages with TMA tile copies: a [e_tile, k_tile]
  slice of W and the matching [m_tile, k_tile] slice of x per stage, each stage guarded by a
  full/empty mbarrier pair. W does not depend on the previous kernel, so with PDL the first
  ``stages`` W tiles are requested before ``griddepcontrol.wait``; only the x tiles wait.
- Consumer warps turn each stage into partial sums, by one of two variants:
  ``dot``: CUDA-core dot products in fp32 (any dtype pair, fp32 weights stay fp32); warps own
  experts, lanes own 16-byte column chunks, a butterfly sums the lanes.
  ``mma``: tensor cores (mma.sync m16n8k16, bf16/fp16 in, fp32 accumulate) with experts as the
  MMA's M dimension (swap-AB) so one token still fills an 8-wide N; warps own 32-column chunks.
- The CTAs of a cluster reduce their partial tiles through distributed shared memory in a fixed
  order (no atomics: bitwise-deterministic), add the bias, round once and store.

Out-of-range rows/columns (partial E, M or H tiles) arrive as zeros from TMA, so only the final
store is masked. H must be a multiple of 8 (TMA needs 16-byte row strides).
"""

from dataclasses import dataclass

from .common import WIDTHS, dtype, fake_stream, fake_tensor
from .dsl import T, cpasync, cute, cutlass, dsl_user_op, llvm

Float32, Int32 = cutlass.Float32, cutlass.Int32

VARIANTS = ("dot", "mma")
WARP = 32
VEC_BYTES = 16
MMA_K = 32  # columns one warp consumes per step: two m16n8k16 MMAs


@dataclass(frozen=True)
class RouterGemm:
    x_dtype: str  # "bfloat16" | "float16" | "float32"
    w_dtype: str  # "bfloat16" | "float16" | "float32"
    out_dtype: str  # "float32" | "bfloat16"
    bias_dtype: str | None  # None (no bias) or a float dtype name
    variant: str  # "dot" | "mma"
    e_tile: int  # experts per CTA
    m_tile: int  # tokens per CTA
    split_k: int  # CTAs per cluster, each taking 1/split_k of H
    stages: int  # shared-memory ring depth
    pdl: bool
    consumer_warps: int = 4

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}; got {self.variant!r}")
        if self.variant == "mma":
            if self.x_dtype != self.w_dtype or self.w_dtype not in ("bfloat16", "float16"):
                raise ValueError("the mma variant needs x and weight both bfloat16 or both float16")
            if self.e_tile % 16 or self.m_tile % 8:
                raise ValueError("the mma variant tiles experts by 16 and tokens by 8")
        elif self.e_tile % self.consumer_warps:
            raise ValueError("the dot variant gives each consumer warp the same number of experts")
        if self.e_tile % 4:
            raise ValueError("e_tile must be a multiple of 4 (the epilogue moves 4-float vectors)")
        if not 1 <= self.split_k <= 8:
            raise ValueError("split_k is a portable cluster size: 1 to 8")

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
    def threads(self) -> int:
        return (self.consumer_warps + 1) * WARP  # + the producer warp

    @property
    def red_slices(self) -> int:
        """Partial tiles per CTA: the mma warps each cover every (token, expert) of the tile."""
        return self.consumer_warps if self.variant == "mma" else 1

    @property
    def stage_bytes(self) -> int:
        """Bytes one ring stage receives by TMA: a W tile and an x tile."""
        return self.k_tile * (self.e_tile * WIDTHS[self.w_dtype] + self.m_tile * WIDTHS[self.x_dtype]) // 8

    @property
    def smem_per_stage(self) -> int:
        return self.stage_bytes + 2 * 8  # + its full and empty mbarriers

    @property
    def red_bytes(self) -> int:
        """The fp32 partial tiles the epilogue reduces."""
        return self.red_slices * self.m_tile * self.e_tile * 4

    def smem_bytes(self) -> int:
        return self.stages * self.smem_per_stage + self.red_bytes

    def fake_args(self):
        m, e = cute.sym_int(), cute.sym_int()
        h = cute.sym_int(divisibility=8)
        return (
            fake_tensor(self.x_dtype, (m, h), (h, 1), 16),
            fake_tensor(self.w_dtype, (e, h), (h, 1), 16),
            # Without bias the slot takes any one-element fp32 tensor and is never read.
            fake_tensor(self.bias_dtype, (e,), (1,), 2) if self.bias_dtype else fake_tensor("float32", (1,), (1,), 4),
            fake_tensor(self.out_dtype, (m, e), (e, 1), 4),
            fake_stream(),
        )

    @cute.jit
    def __call__(self, x: cute.Tensor, w: cute.Tensor, bias: cute.Tensor, out: cute.Tensor, stream):
        m = cute.size(x, mode=[0])
        e = cute.size(w, mode=[0])
        k_tile = self.k_tile
        tma_w = cpasync.make_tiled_tma_atom(
            cpasync.CopyBulkTensorTileG2SOp(), w, cute.make_layout((self.e_tile, k_tile), stride=(k_tile, 1)),
            (self.e_tile, k_tile))
        tma_x = cpasync.make_tiled_tma_atom(
            cpasync.CopyBulkTensorTileG2SOp(), x, cute.make_layout((self.m_tile, k_tile), stride=(k_tile, 1)),
            (self.m_tile, k_tile))
        grid_e = cute.ceil_div(e, self.e_tile) * self.split_k
        grid_m = cute.ceil_div(m, self.m_tile)
        self.kernel(tma_w.atom, tma_w.tma_tensor, tma_x.atom, tma_x.tma_tensor, bias, out).launch(
            grid=[grid_e, grid_m, 1], block=[self.threads, 1, 1], cluster=[self.split_k, 1, 1],
            smem=self.smem_bytes(), stream=stream, use_pdl=self.pdl)

    @cute.kernel
    def kernel(self, tma_w_atom: cute.CopyAtom, mw: cute.Tensor, tma_x_atom: cute.CopyAtom, mx: cute.Tensor,
               bias: cute.Tensor, out: cute.Tensor):
        tidx, _, _ = cute.arch.thread_idx()
        bidx, bidy, _ = cute.arch.block_idx()
        warp = cute.arch.make_warp_uniform(tidx // WARP)
        lane = tidx % WARP
        k_tile, stages = self.k_tile, self.stages
        w_t, x_t = dtype(self.w_dtype), dtype(self.x_dtype)

        rank = bidx % self.split_k  # == the CTA's rank in its cluster (cluster = [split_k, 1, 1])
        e_blk = bidx // self.split_k
        h = cute.size(mw, mode=[1])
        n_k = cute.ceil_div(h, k_tile)
        k_begin = (rank * n_k) // self.split_k
        k_count = ((rank + 1) * n_k) // self.split_k - k_begin

        smem = cutlass.utils.SmemAllocator()
        s_w = smem.allocate_tensor(w_t, cute.make_layout((self.e_tile, k_tile, stages),
                                                         stride=(k_tile, 1, self.e_tile * k_tile)), 128)
        s_x = smem.allocate_tensor(x_t, cute.make_layout((self.m_tile, k_tile, stages),
                                                         stride=(k_tile, 1, self.m_tile * k_tile)), 128)
        red = smem.allocate_tensor(Float32, cute.make_layout(
            (self.red_slices, self.m_tile, self.e_tile),
            stride=(self.m_tile * self.e_tile, self.e_tile, 1)), 16)
        full = smem.allocate_array(cutlass.Int64, stages, byte_alignment=8)
        empty = smem.allocate_array(cutlass.Int64, stages, byte_alignment=8)

        if warp == 0:
            with cute.arch.elect_one():
                for s in cutlass.range_constexpr(stages):
                    cute.arch.mbarrier_init(full + s, 1)
                    cute.arch.mbarrier_init(empty + s, self.consumer_warps)
        cute.arch.mbarrier_init_fence()
        cute.arch.sync_threads()

        if warp == self.consumer_warps:
            self.produce(tma_w_atom, mw, tma_x_atom, mx, s_w, s_x, full, empty, e_blk, bidy, k_begin, k_count)
        else:
            if cutlass.const_expr(self.pdl):
                cute.arch.griddepcontrol_wait()
                cute.arch.griddepcontrol_launch_dependents()
            if cutlass.const_expr(self.variant == "mma"):
                self.consume_mma(s_w, s_x, red, full, empty, warp, lane, k_count)
            else:
                self.consume_dot(s_w, s_x, red, full, empty, warp, lane, k_count)

        self.reduce_and_store(red, bias, out, e_blk, bidy, rank, tidx)

    @cute.jit
    def produce(self, tma_w_atom, mw, tma_x_atom, mx, s_w, s_x, full, empty, e_blk, m_blk, k_begin, k_count):
        k_tile, stages = self.k_tile, self.stages
        g_w = cute.local_tile(mw, (self.e_tile, k_tile), (e_blk, None))  # (e_tile, k_tile, n_k)
        g_x = cute.local_tile(mx, (self.m_tile, k_tile), (m_blk, None))
        t_sw, t_gw = cpasync.tma_partition(tma_w_atom, 0, cute.make_layout(1),
                                           cute.group_modes(s_w, 0, 2), cute.group_modes(g_w, 0, 2))
        t_sx, t_gx = cpasync.tma_partition(tma_x_atom, 0, cute.make_layout(1),
                                           cute.group_modes(s_x, 0, 2), cute.group_modes(g_x, 0, 2))
        stage_bytes = self.stage_bytes
        cpasync.prefetch_descriptor(tma_w_atom)
        cpasync.prefetch_descriptor(tma_x_atom)
        first = cutlass.min(k_count, stages)
        # Weights first: they do not depend on the previous kernel, so with PDL they stream
        # while it finishes. Each stage's barrier expects its W and x bytes together.
        for i in cutlass.range(first, unroll=1):
            with cute.arch.elect_one():
                cute.arch.mbarrier_arrive_and_expect_tx(full + i, stage_bytes)
            cute.copy(tma_w_atom, t_gw[(None, k_begin + i)], t_sw[(None, i)], tma_bar_ptr=full + i)
        if cutlass.const_expr(self.pdl):
            cute.arch.griddepcontrol_wait()
            cute.arch.griddepcontrol_launch_dependents()
        for i in cutlass.range(first, unroll=1):
            cute.copy(tma_x_atom, t_gx[(None, k_begin + i)], t_sx[(None, i)], tma_bar_ptr=full + i)
        for i in cutlass.range(stages, k_count, unroll=1):
            s = i % stages
            cute.arch.mbarrier_wait(empty + s, (i // stages - 1) % 2)
            with cute.arch.elect_one():
                cute.arch.mbarrier_arrive_and_expect_tx(full + s, stage_bytes)
            cute.copy(tma_w_atom, t_gw[(None, k_begin + i)], t_sw[(None, s)], tma_bar_ptr=full + s)
            cute.copy(tma_x_atom, t_gx[(None, k_begin + i)], t_sx[(None, s)], tma_bar_ptr=full + s)

    @cute.jit
    def release(self, empty, s, lane):
        cute.arch.sync_warp()
        if lane == 0:
            cute.arch.mbarrier_arrive(empty + s)

    @cute.jit
    def consume_dot(self, s_w, s_x, red, full, empty, warp, lane, k_count):
        """Warp w owns experts [w * epw, (w + 1) * epw) of the tile; lane l owns columns
        [l * vec, (l + 1) * vec) of every stage. acc[m, j] sums x[m, :] * W[e_j, :] over them."""
        vec, stages = self.w_vec, self.stages
        epw = self.e_tile // self.consumer_warps
        n_acc = self.m_tile * epw
        acc = cute.make_rmem_tensor(cute.make_layout(n_acc), Float32)
        acc.fill(0.0)
        xv = cute.make_rmem_tensor(cute.make_layout((vec, self.m_tile), stride=(1, vec)), Float32)
        wv = cute.make_rmem_tensor(cute.make_layout(vec), Float32)
        for i in cutlass.range(k_count, unroll=1):
            s = i % stages
            cute.arch.mbarrier_wait(full + s, (i // stages) % 2)
            for m in cutlass.range_constexpr(self.m_tile):
                chunk = cute.zipped_divide(s_x[(m, None, s)], (vec,))
                xv[(None, m)].store(chunk[(None, lane)].load().to(Float32))
            for j in cutlass.range_constexpr(epw):
                chunk = cute.zipped_divide(s_w[(warp * epw + j, None, s)], (vec,))
                wv.store(chunk[(None, lane)].load().to(Float32))
                for m in cutlass.range_constexpr(self.m_tile):
                    a = acc[m * epw + j]
                    for v in cutlass.range_constexpr(vec):
                        a = a + xv[v, m] * wv[v]
                    acc[m * epw + j] = a
            self.release(empty, s, lane)
        for a in cutlass.range_constexpr(n_acc):
            offset = WARP // 2
            while offset >= 1:  # unrolled at trace time
                acc[a] = acc[a] + cute.arch.shuffle_sync_bfly(acc[a], offset=offset)
                offset //= 2
        # Every lane now holds every sum; lanes write different ones.
        for a in cutlass.range_constexpr(n_acc):
            if lane == a % WARP:
                red[0, a // epw, warp * epw + a % epw] = acc[a]

    @cute.jit
    def consume_mma(self, s_w, s_x, red, full, empty, warp, lane, k_count):
        """Warp w owns columns [32 w, 32 w + 32) of every stage. Lane (r, q) = (lane / 4, lane % 4)
        loads 16 bytes: W rows r and r + 8 of each 16-expert block and x row r of each 8-token
        block, columns [8q, 8q + 8). The dot product does not care how columns pair up, so each
        16-byte load feeds two MMAs directly: MMA h uses columns 8q + 4h .. 8q + 4h + 3, which
        the fragment layout reads as k = 2q, 2q + 1 (a0/b0) and 2q + 8, 2q + 9 (a2/b1)."""
        stages = self.stages
        eb, nb = self.e_tile // 16, self.m_tile // 8
        r, q = lane // 4, lane % 4
        acc = cute.make_rmem_tensor(cute.make_layout((4, eb, nb), stride=(1, 4, 4 * eb)), Float32)
        acc.fill(0.0)
        a_lo = cute.make_rmem_tensor(cute.make_layout(8), dtype(self.w_dtype))
        a_hi = cute.make_rmem_tensor(cute.make_layout(8), dtype(self.w_dtype))
        bx = cute.make_rmem_tensor(cute.make_layout((8, nb), stride=(1, 8)), dtype(self.x_dtype))
        col = warp * (MMA_K // 8) + q  # this lane's 16-byte chunk within the stage row
        for i in cutlass.range(k_count, unroll=1):
            s = i % stages
            cute.arch.mbarrier_wait(full + s, (i // stages) % 2)
            for n in cutlass.range_constexpr(nb):
                chunk = cute.zipped_divide(s_x[(n * 8 + r, None, s)], (8,))
                bx[(None, n)].store(chunk[(None, col)].load())
            b32 = cute.recast_tensor(bx, Int32)
            for b in cutlass.range_constexpr(eb):
                a_lo.store(cute.zipped_divide(s_w[(b * 16 + r, None, s)], (8,))[(None, col)].load())
                a_hi.store(cute.zipped_divide(s_w[(b * 16 + r + 8, None, s)], (8,))[(None, col)].load())
                lo32, hi32 = cute.recast_tensor(a_lo, Int32), cute.recast_tensor(a_hi, Int32)
                for n in cutlass.range_constexpr(nb):
                    for half in cutlass.range_constexpr(2):
                        d = mma_m16n8k16(
                            self.w_dtype,
                            lo32[2 * half], hi32[2 * half], lo32[2 * half + 1], hi32[2 * half + 1],
                            b32[n * 4 + 2 * half], b32[n * 4 + 2 * half + 1],
                            acc[0, b, n], acc[1, b, n], acc[2, b, n], acc[3, b, n])
                        for c in cutlass.range_constexpr(4):
                            acc[c, b, n] = d[c]
            self.release(empty, s, lane)
        # C fragment: c0, c1 = (expert r, tokens 2q, 2q + 1); c2, c3 = expert r + 8.
        for b in cutlass.range_constexpr(eb):
            for n in cutlass.range_constexpr(nb):
                for c in cutlass.range_constexpr(4):
                    red[warp, n * 8 + 2 * q + c % 2, b * 16 + r + 8 * (c // 2)] = acc[c, b, n]

    @cute.jit
    def reduce_and_store(self, red, bias, out, e_blk, m_blk, rank, tidx):
        """Sum the partial tiles, add the bias, round once, store. Fixed order (warp slices,
        then cluster ranks), so results are bitwise-reproducible. Works on 4-float vectors: the
        consumer warps first fold their slices into slice 0, then each CTA of the cluster
        finalises every split_k-th vector, issuing all its peers' DSMEM loads before summing
        (one remote latency per vector, not one per peer)."""
        consumer_threads = self.consumer_warps * WARP
        n_vec = self.m_tile * self.e_tile // 4
        flat = cute.make_tensor(red.iterator, cute.make_layout(self.red_slices * n_vec * 4))
        vecs = cute.zipped_divide(flat, (4,))  # (4, slices * n_vec)
        if cutlass.const_expr(self.red_slices > 1):
            if tidx < consumer_threads:  # whole warps: the producer warp must not join this barrier
                cute.arch.barrier(barrier_id=1, number_of_threads=consumer_threads)
                for v in cutlass.range(tidx, n_vec, consumer_threads, unroll=1):
                    acc = vecs[(None, v)].load()
                    for sl in cutlass.range_constexpr(1, self.red_slices):
                        acc = acc + vecs[(None, sl * n_vec + v)].load()
                    vecs[(None, v)].store(acc)
        if cutlass.const_expr(self.split_k > 1):
            cute.arch.cluster_arrive()
            cute.arch.cluster_wait()
        else:
            cute.arch.sync_threads()
        m_total = cute.size(out, mode=[0])
        e_total = cute.size(out, mode=[1])
        if tidx < consumer_threads:
            total = cute.make_rmem_tensor(cute.make_layout(4), Float32)
            for v in cutlass.range(rank + tidx * self.split_k, n_vec, self.split_k * consumer_threads, unroll=1):
                if cutlass.const_expr(self.split_k > 1):
                    parts = [load_dsmem_v4(red.iterator + v * 4, p) for p in range(self.split_k)]
                    for j in cutlass.range_constexpr(4):
                        acc = parts[0][j]
                        for p in cutlass.range_constexpr(1, self.split_k):
                            acc = acc + parts[p][j]
                        total[j] = acc
                else:
                    total.store(vecs[(None, v)].load())
                mi = (v * 4) // self.e_tile
                m = m_blk * self.m_tile + mi
                e0 = e_blk * self.e_tile + v * 4 - mi * self.e_tile
                for j in cutlass.range_constexpr(4):
                    e = e0 + j
                    if m < m_total and e < e_total:
                        y = total[j]
                        if cutlass.const_expr(self.bias_dtype is not None):
                            y = y + bias[e].to(Float32)
                        out[m, e] = y.to(dtype(self.out_dtype))
        if cutlass.const_expr(self.split_k > 1):
            # Peers may still be reading this CTA's partials: stay resident until they are done.
            cute.arch.cluster_arrive()
            cute.arch.cluster_wait()


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
def load_dsmem_v4(ptr, rank, *, loc=None, ip=None):
    """The 4 fp32 at 16-byte aligned shared-memory pointer ``ptr`` of the cluster's CTA ``rank``."""
    addr = Int32(cute.arch.map_dsmem_ptr(ptr, rank, loc=loc, ip=ip).toint(loc=loc, ip=ip))
    # Side effects: keeps the load below the cluster barrier that publishes the data.
    res = llvm.inline_asm(llvm.StructType.get_literal([T.f32()] * 4), [addr.ir_value(loc=loc, ip=ip)],
                          "ld.shared::cluster.v4.f32 {$0, $1, $2, $3}, [$4];", "=f,=f,=f,=f,r",
                          has_side_effects=True, is_align_stack=False, asm_dialect=llvm.AsmDialect.AD_ATT,
                          loc=loc, ip=ip)
    return [Float32(llvm.extractvalue(T.f32(), res, [i], loc=loc, ip=ip)) for i in range(4)]
