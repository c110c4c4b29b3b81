"""Probe: what one eager launch of a compiled CuTe function costs on the host, piece by piece.
Empty kernels compiled here (TVM-FFI, the caller's torch stream), with 1 or 5 tensor arguments,
with 0 or 2 TMA descriptors built by the host function, with PDL, with an 8-CTA cluster; beside
them a TVM-FFI no-op with the same tensors, the project's own compiled functions, an allocation
and a bare torch launch. Each figure: us per call over 2000 back-to-back calls and one sync;
three interleaved rounds, median.
    python -m perf.probes.host_launch_probe
"""
import statistics
import torch
import tvm_ffi
import cutlass
import cutlass.cute as cute
from cutlass.cute.nvgpu import cpasync
from cute_kernels.kernels import router_gemm as router_family
from cute_kernels.kernels.router_gemm import tiling as router_tiling
from cute_kernels import bridge, ops, timing
from cute_kernels.kernels.common import fake_stream, fake_tensor

H, E = 7168, 256


def tma_atom(t, rows):
    return cpasync.make_tiled_tma_atom(cpasync.CopyBulkTensorTileG2SOp(), t,
                                       cute.make_layout((rows, 128), stride=(128, 1)), (rows, 128))


class Empty:
    def __init__(self, tensors, tma, pdl, cluster):
        self.tensors, self.tma, self.pdl, self.cluster = tensors, tma, pdl, cluster

    def fake_args(self):
        m, e, h = cute.sym_int(), cute.sym_int(), cute.sym_int(divisibility=8)
        ts = [fake_tensor("bfloat16", (m, h), (h, 1), 16), fake_tensor("bfloat16", (e, h), (h, 1), 16),
              fake_tensor("float32", (1,), (1,), 4), fake_tensor("float32", (m, e), (e, 1), 4),
              fake_tensor("int32", (cute.sym_int(),), (1,), 16)]
        return (*ts[:self.tensors], fake_stream())

    @cute.jit
    def __call__(self, *args):
        stream = args[-1]
        x, w = args[0], args[1] if self.tensors > 1 else args[0]
        if cutlass.const_expr(self.tma):
            tw, tx = tma_atom(w, 32), tma_atom(x, 8)
            self.kernel_tma(tw.atom, tw.tma_tensor, tx.atom, tx.tma_tensor).launch(
                grid=[self.cluster, 1, 1], block=[128, 1, 1], cluster=[self.cluster, 1, 1], stream=stream,
                use_pdl=self.pdl)
        else:
            self.kernel(x).launch(grid=[self.cluster, 1, 1], block=[128, 1, 1], cluster=[self.cluster, 1, 1],
                                  stream=stream, use_pdl=self.pdl)

    @cute.kernel
    def kernel(self, x: cute.Tensor):
        pass

    @cute.kernel
    def kernel_tma(self, aw: cute.CopyAtom, tw: cute.Tensor, ax: cute.CopyAtom, tx: cute.Tensor):
        tidx, _, _ = cute.arch.thread_idx()
        if tidx == 0:
            cpasync.prefetch_descriptor(aw)
            cpasync.prefetch_descriptor(ax)


def main():
    dev = torch.device("cuda")
    x = torch.randn(1, H, device=dev).bfloat16()
    w = torch.randn(E, H, device=dev).bfloat16()
    b = torch.zeros(1, device=dev)
    out = torch.empty(1, E, device=dev)
    ws = torch.zeros(1 << 20, dtype=torch.int32, device=dev)
    five = (x, w, b, out, ws)
    nop = tvm_ffi.get_global_func("testing.nop")
    calls = {"tvm-ffi nop()": lambda: nop(),
             "tvm-ffi nop(1 tensor)": lambda: nop(x),
             "tvm-ffi nop(5 tensors)": lambda: nop(*five)}
    for name, (n, tma, pdl, cl) in {"empty kernel, 1 tensor": (1, False, False, 1),
                                    "empty kernel, 5 tensors": (5, False, False, 1),
                                    "empty kernel, 5 tensors, 2 TMA": (5, True, False, 1),
                                    "empty kernel, 5 tensors, 2 TMA, PDL": (5, True, True, 1),
                                    "empty kernel, 5 tensors, 2 TMA, PDL, cluster 8": (5, True, True, 8),
                                    "empty kernel, 2 tensors, 2 TMA, PDL": (2, True, True, 1)}.items():
        k = Empty(n, tma, pdl, cl)
        fn = cute.compile(k, *k.fake_args(), options="--enable-tvm-ffi")
        calls[name] = (lambda fn=fn, n=n: fn(*five[:n]))
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    for variant in ("dot", "mma"):
        kern = router_family.pick("bfloat16", "bfloat16", "float32", None, 1, H, E, variant, True, sms)
        fn = bridge.compiled(kern, dev)
        calls[f"router {variant} compiled function ({kern.split_k}-way {kern.reduce}), {type(fn).__name__}"] = (
            lambda fn=fn: fn(x, w, b, out, ws))
        raw = getattr(fn, "__tvm_ffi_object__", None)
        if raw is not None:
            raw = raw()
            calls[f"router {variant}: its raw {type(raw).__name__}"] = lambda raw=raw: raw(x, w, b, out, ws)
    calls["x.new_empty(1, E)"] = lambda: x.new_empty(1, E, dtype=torch.float32)
    calls["torch add_"] = lambda: b.add_(1)
    calls["torch.cuda.current_stream()"] = lambda: torch.cuda.current_stream()
    runs = {name: [] for name in calls}
    for _ in range(3):
        for name, call in calls.items():
            runs[name].append(timing.eager_overhead_us(call, (), 2000))
    for name, us in runs.items():
        print(f"{name:<58} {statistics.median(us):6.2f} us   ({' '.join(f'{u:.2f}' for u in us)})", flush=True)


if __name__ == "__main__":
    main()
