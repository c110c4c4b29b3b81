"""Inline PTX and warp-level helpers the kernels share: tensor-core MMAs from registers, exact
bf16 splits, DSMEM stores that complete on a peer's mbarrier, L2 loads, butterfly sums."""

import cutlass
import cutlass.cute as cute
from cutlass._mlir.dialects import llvm
from cutlass.cutlass_dsl import T, dsl_user_op

from .common import WARP

Float32, Int32 = cutlass.Float32, cutlass.Int32

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


@dsl_user_op
def f32_bits(v, *, loc=None, ip=None):
    """The bits of an fp32 value as an int32 (a bit cast, no conversion)."""
    return Int32(llvm.bitcast(T.i32(), Float32(v).ir_value(loc=loc, ip=ip), loc=loc, ip=ip))
