"""The top-k packing kernel. The three [T, k] tensors are contiguous, so it walks them as one
flat array of T * k elements; each thread owns ``vec`` consecutive elements and moves them with
one vector load/store per tensor (16 bytes for int32/fp32 at vec = 4, two at vec = 8). ``vec``
divides k, so it divides T * k for every T, and every group of ``vec`` starts aligned."""

import cutlass
import cutlass.cute as cute

from ..dsl import dtype, fake_stream, fake_tensor, pdl_enter
from .config import PackTopk

Int32, Uint16 = cutlass.Int32, cutlass.Uint16


class PackTopkKernel(PackTopk):
    def fake_args(self):
        t = cute.sym_int()
        shape, stride = (t, self.k), (self.k, 1)
        align = lambda name: min(self.vec * dtype(name).width // 8, 16)  # noqa: E731
        return (
            fake_tensor(self.ids_dtype, shape, stride, align(self.ids_dtype)),
            fake_tensor(self.weights_dtype, shape, stride, align(self.weights_dtype)),
            fake_tensor("int32", shape, stride, align("int32")),
            fake_stream(),
        )

    @cute.jit
    def __call__(self, ids: cute.Tensor, weights: cute.Tensor, out: cute.Tensor, stream):
        n = cute.size(out)
        flat = lambda t: cute.make_tensor(t.iterator, cute.make_layout(n))  # noqa: E731
        blocks = cute.ceil_div(n, self.vec * self.threads)
        self.kernel(flat(ids), flat(weights), flat(out)).launch(
            grid=[blocks, 1, 1], block=[self.threads, 1, 1], stream=stream, use_pdl=self.pdl
        )

    @cute.kernel
    def kernel(self, ids: cute.Tensor, weights: cute.Tensor, out: cute.Tensor):
        tidx, _, _ = cute.arch.thread_idx()
        bidx, _, _ = cute.arch.block_idx()
        pdl_enter(self.pdl)
        v_ids = cute.zipped_divide(ids, (self.vec,))
        v_w = cute.zipped_divide(weights, (self.vec,))
        v_out = cute.zipped_divide(out, (self.vec,))
        i = bidx * self.threads + tidx
        if i < cute.size(v_out, mode=[1]):
            r_ids = cute.make_rmem_tensor(cute.make_layout(self.vec), Int32)
            r_ids.store(v_ids[(None, i)].load().to(Int32))
            r_w = cute.make_rmem_tensor(cute.make_layout(self.vec), cutlass.BFloat16)
            r_w.store(v_w[(None, i)].load().to(cutlass.BFloat16))  # round to nearest even
            r_bits = cute.make_rmem_tensor(cute.make_layout(self.vec), Int32)
            r_bits.store(cute.recast_tensor(r_w, Uint16).load().to(Int32))  # zero-extends
            r_out = cute.make_rmem_tensor(cute.make_layout(self.vec), Int32)
            for j in cutlass.range_constexpr(self.vec):
                r_out[j] = (r_ids[j] << 16) | r_bits[j]
            v_out[(None, i)].store(r_out.load())


KERNELS = {PackTopk: PackTopkKernel}
