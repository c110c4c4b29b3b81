"""The SiLU * Mul + FP8 group quantisation kernel. A streaming kernel: each thread owns 8
consecutive columns of one row, so it reads 16 bytes of gate and 16 bytes of up and writes 8
bytes of q. Threads are numbered flat over (row, column chunk): thread i handles q's 8-element
chunk i. One group is G / 8 (8 or 16) consecutive threads, always aligned inside a warp because
H / 8 is a multiple of G / 8, so a butterfly shuffle over those lanes gives every thread the
group's amax.

|y| is reduced as integer bits: for non-negative floats the bit order is the value order and
any NaN sorts above inf, so the max propagates NaN exactly like the spec.
"""

import struct

import cutlass
import cutlass.cute as cute
from cutlass._mlir.dialects import llvm
from cutlass.cutlass_dsl import T, dsl_user_op

from ..dsl import fake_stream, fake_tensor, pdl_enter
from .config import SiluMulQuantFp8

Float32, Int32 = cutlass.Float32, cutlass.Int32

VEC = 8  # elements per thread: 16 bytes of bf16/fp16
FP8_MAX = 448.0
SCALE_FLOOR_BITS = struct.unpack("<I", struct.pack("<f", 1e-10))[0]  # fp32(1e-10), as the spec
ABS_MASK = 0x7FFFFFFF
MANT_MASK = 0x007FFFFF
EXP_ONE = 0x00800000  # one unit of the exponent field


class SiluMulQuantFp8Kernel(SiluMulQuantFp8):
    def fake_args(self):
        t = cute.sym_int()
        h, g = self.hidden, self.groups
        s_stride = (g, 1) if self.scale_layout == "row" else (1, t)
        return (
            fake_tensor(self.x_dtype, (t, 2 * h), (2 * h, 1), 16),
            fake_tensor("float8_e4m3fn", (t, h), (h, 1), 8),
            fake_tensor("float32", (t, g), s_stride, 4),
            fake_tensor("float32", (1,), (1,), 4),  # scale_ub; unread unless has_scale_ub
            fake_stream(),
        )

    @cute.jit
    def __call__(self, x: cute.Tensor, q: cute.Tensor, scales: cute.Tensor, scale_ub: cute.Tensor, stream):
        t = cute.size(x, mode=[0])
        flat = lambda a, n: cute.make_tensor(a.iterator, cute.make_layout(n))  # noqa: E731
        # Both scale layouts are one dense buffer of T * G floats; the kernel does the indexing.
        n_chunks = t * (self.hidden // VEC)
        blocks = cute.ceil_div(n_chunks, self.threads)
        self.kernel(flat(x, t * 2 * self.hidden), flat(q, t * self.hidden), flat(scales, t * self.groups),
                    scale_ub, t).launch(
            grid=[blocks, 1, 1], block=[self.threads, 1, 1], stream=stream, use_pdl=self.pdl
        )

    @cute.kernel
    def kernel(self, x: cute.Tensor, q: cute.Tensor, scales: cute.Tensor, scale_ub: cute.Tensor, t: Int32):
        tidx, _, _ = cute.arch.thread_idx()
        bidx, _, _ = cute.arch.block_idx()
        pdl_enter(self.pdl)
        chunks_per_row = self.hidden // VEC
        lanes = self.group_size // VEC  # threads per group: 8 or 16, a power of two
        v_x = cute.zipped_divide(x, (VEC,))
        v_q = cute.zipped_divide(q, (VEC,))

        i = bidx * self.threads + tidx
        valid = i < t * chunks_per_row
        row = i // chunks_per_row
        col = i - row * chunks_per_row

        y = cute.make_rmem_tensor(cute.make_layout(VEC), Float32)
        y.fill(0.0)  # rows past T still join the shuffles with |y| = 0
        if valid:
            gate_chunk = row * (2 * chunks_per_row) + col
            g = cute.make_rmem_tensor(cute.make_layout(VEC), Float32)
            g.store(v_x[(None, gate_chunk)].load().to(Float32))
            u = cute.make_rmem_tensor(cute.make_layout(VEC), Float32)
            u.store(v_x[(None, gate_chunk + chunks_per_row)].load().to(Float32))
            e = cute.make_rmem_tensor(cute.make_layout(VEC), Float32)
            e.store(cute.math.exp(-g.load()))  # full-precision expf, like torch's
            for j in cutlass.range_constexpr(VEC):
                # The spec's expression with 1 + exp rounded on its own (LLVM would fuse exp's
                # last multiply into it). See exact_division for the division.
                if cutlass.const_expr(self.exact_division):
                    y[j] = g[j] / add_rn(Float32(1.0), e[j]) * u[j]
                else:
                    y[j] = g[j] * cute.arch.rcp_approx(add_rn(Float32(1.0), e[j])) * u[j]

        bits = cute.recast_tensor(y, Int32)
        amax = Int32(0)
        for j in cutlass.range_constexpr(VEC):
            amax = cutlass.max(amax, bits[j] & ABS_MASK)
        offset = 1
        while offset < lanes:  # unrolled at trace time
            amax = cutlass.max(amax, cute.arch.shuffle_sync_bfly(amax, offset=offset))
            offset *= 2

        # max(amax, 1e-10) on the bits keeps NaN (fmax would drop it); then a true division.
        floor = cutlass.max(amax, Int32(SCALE_FLOOR_BITS))
        scale = cute.make_rmem_tensor(cute.make_layout(1), Int32)
        scale[0] = floor
        s = cute.recast_tensor(scale, Float32)[0] / FP8_MAX
        if cutlass.const_expr(self.has_scale_ub):
            ub = scale_ub[0]
            # torch.minimum: NaN in either operand gives NaN.
            if ub != ub:
                s = ub
            elif ub < s:
                s = ub
        if cutlass.const_expr(self.ue8m0):
            s = ceil_pow2(s)

        if valid:
            if col % lanes == 0:
                grp = col // lanes
                if cutlass.const_expr(self.scale_layout == "row"):
                    scales[row * self.groups + grp] = s
                else:
                    scales[grp * t + row] = s
            # cvt.rn.satfinite: saturates to +-448 and keeps NaN, the spec's clamp then round.
            qv = cute.make_rmem_tensor(cute.make_layout(VEC), Float32)
            inv_s = Float32(1.0) / s
            # 1 / s overflows for a tiny scale_ub (0 * inf would be NaN where y / s is 0):
            # divide there; inf - inf and NaN - NaN are NaN, anything finite gives 0.
            if cutlass.const_expr(self.exact_division) or inv_s - inv_s != Float32(0.0):
                for j in cutlass.range_constexpr(VEC):
                    qv[j] = y[j] / s
            else:
                for j in cutlass.range_constexpr(VEC):
                    qv[j] = y[j] * inv_s
            v_q[(None, i)].store(qv.load().to(cutlass.Float8E4M3FN))


@cute.jit
def ceil_pow2(s: Float32) -> Float32:
    """The spec's _ceil_pow2 on the fp32 bits: positive finite values round up to a power of two
    (above 2**127 to inf); zero, negatives, inf and NaN pass through."""
    box = cute.make_rmem_tensor(cute.make_layout(1), Float32)
    box[0] = s
    b = cute.recast_tensor(box, Int32)
    bits = b[0]
    exp_field = bits & 0x7F800000
    mant = bits & MANT_MASK
    positive_finite = (bits > 0) & (exp_field != 0x7F800000)  # sign clear, not +0, inf or NaN
    if positive_finite & (exp_field != 0) & (mant != 0):
        b[0] = exp_field + EXP_ONE  # 254 + 1 -> 255 with mantissa 0: inf
    if positive_finite & (exp_field == 0):
        # Subnormal m * 2**-149: the answer's bits are the integer 2**ceil(log2(m)), which the
        # normal rule gives exactly on float(m) (exact, m < 2**23).
        fb = cute.make_rmem_tensor(cute.make_layout(1), Float32)
        fb[0] = mant.to(Float32)
        fbits = cute.recast_tensor(fb, Int32)
        if fbits[0] & MANT_MASK != 0:
            fbits[0] = (fbits[0] & 0x7F800000) + EXP_ONE
        b[0] = fb[0].to(Int32)
    return box[0]


@dsl_user_op
def add_rn(a: Float32, b: Float32, *, loc=None, ip=None) -> Float32:
    """a + b rounded on its own: opaque to LLVM, so it can never be contracted into an fma."""
    return Float32(llvm.inline_asm(T.f32(), [Float32(a).ir_value(loc=loc, ip=ip), Float32(b).ir_value(loc=loc, ip=ip)],
                                   "add.rn.f32 $0, $1, $2;", "=f,f,f", has_side_effects=False,
                                   is_align_stack=False, asm_dialect=llvm.AsmDialect.AD_ATT, loc=loc, ip=ip))


KERNELS = {SiluMulQuantFp8: SiluMulQuantFp8Kernel}
