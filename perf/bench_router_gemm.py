"""Router GEMM: what ``perf/sweep.py --op router_gemm`` times, per preset (or HxE shape) x M.

One implementation per dispatcher tier, plus the dispatcher itself:
- ``cute-dot``, ``cute-mma``: ``cute_kernels.router_gemm(variant=...)``, PDL on (``--pdl-off`` adds off);
- ``cublas``: ``torch.mm(x, W.T, out_dtype=float32)`` (+ bias), what a serving engine runs for 16-bit weights;
- ``torch``: fp32 ``F.linear`` without TF32, the path for fp32 weights;
- ``dispatch``: ``dispatch.router_gemm`` with the shipped tuning table; its rows name the tier it ran;
- ``flashinfer``: FlashInfer's router GEMM for its shapes at M <= 16, only where it is installed.
Speedups are over ``cublas`` where it runs, else ``torch``. Also measured: the PDL chain (a
producer kernel writing x, then the router) for DeepSeek-V3 at M = 1 and 16.

    python perf/bench_router_gemm.py [sweep options]   # = python perf/sweep.py --op router_gemm
"""

import pathlib
import statistics
import sys
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere, installed or not
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cute_kernels import presets, timing  # noqa: E402
from dispatch.ops import router_gemm as router  # noqa: E402

OP = FILE = "router_gemm"
SIZE = "M"
SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
POINT = ("preset", "H", "E", "x_dtype", "w_dtype", "out_dtype", "bias", "M")
QUICK_PRESETS = ["deepseek-v3", "minimax-m2", "gpt-oss-120b"]  # bf16; fp32 weights; bias + bf16 out
QUICK_SIZES = [1, 16, 128]
IMPLS = [("cute-dot", True), ("cute-mma", True), ("cublas", False), ("torch", False), ("dispatch", True),
         ("flashinfer", True)]
PDL_IMPLS = ("cute-dot", "cute-mma", "flashinfer")
BASELINES = ("cublas", "torch")
TIERS = {("cute-dot", True): "cute-dot", ("cute-mma", True): "cute-mma", ("cublas", False): "cublas",
         ("torch", False): "torch"}
DESCRIPTIONS = {
    "cute-dot": "cute_kernels.router_gemm(variant='dot')",
    "cute-mma": "cute_kernels.router_gemm(variant='mma')",
    "cublas": "dispatch tier cublas: torch.mm(x, W.T, out_dtype=float32) (+ bias)",
    "torch": "dispatch tier torch: F.linear in fp32, no TF32",
    "dispatch": "dispatch.router_gemm with the shipped tuning table (row field 'tier': the tier it ran)",
    "flashinfer": "flashinfer.gemm.mm_M1_16_K<H>_N<E>[_bf16] (specialised shapes, M <= 16)",
}
DT = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def points(preset_names=None, shapes=None, sizes=None, quick=False) -> list:
    """A point per (problem, M); problems from presets (default: all) and ``HxE`` shapes (bf16)."""
    if quick:
        preset_names, sizes = preset_names or ([] if shapes else QUICK_PRESETS), sizes or QUICK_SIZES
    if not preset_names and not shapes:
        preset_names = list(presets.PRESETS)
    problems = []
    for name in preset_names or ():
        p = presets.get(name)
        problems.append({"preset": name, "H": p.hidden_size, "E": p.num_experts, "x_dtype": "bfloat16",
                         "w_dtype": p.gate_dtype, "out_dtype": p.logits_dtype, "bias": p.gate_bias})
    for shape in shapes or ():
        h, e = (int(n) for n in shape.lower().split("x"))
        problems.append({"preset": shape, "H": h, "E": e, "x_dtype": "bfloat16", "w_dtype": "bfloat16",
                         "out_dtype": "float32", "bias": False})
    return [{**problem, "M": m} for problem in problems for m in sizes or SIZES]


def series(point) -> str:
    return point["preset"]


def tuning_key(point):
    return (point["x_dtype"], point["w_dtype"]), (point["H"], point["E"])


def bytes_per_call(point) -> int:
    """W once, x once, logits written, bias."""
    w = DT[point["w_dtype"]].itemsize
    return (point["E"] * point["H"] * w + point["M"] * point["H"] * DT[point["x_dtype"]].itemsize
            + point["M"] * point["E"] * DT[point["out_dtype"]].itemsize + (point["E"] * w if point["bias"] else 0))


def normalise(row) -> dict:
    """Rows of the earlier benchmark named impls differently: ``cute_kernels`` + ``variant`` is
    a CuTe tier, and its ``torch`` was torch.mm(out_dtype=fp32), i.e. the cublas tier, for
    16-bit weights."""
    if row["impl"] == "cute_kernels":
        return {**row, "impl": f"cute-{row['variant']}"}
    if row["impl"] == "torch" and "variant" in row and row["w_dtype"] == row["x_dtype"] != "float32":
        return {**row, "impl": "cublas"}
    return row


def problem(point) -> router.RouterProblem:
    """The dispatcher's view of a point's call on the current GPU (fresh tensors are dense)."""
    bias = (DT[point["w_dtype"]], torch.Size([point["E"]])) if point["bias"] else None
    return router.RouterProblem(torch.device("cuda", 0), DT[point["x_dtype"]], DT[point["w_dtype"]], bias,
                                DT[point["out_dtype"]], point["H"], torch.Size([point["E"], point["H"]]), True)


def _flashinfer(point):
    """FlashInfer's specialised router GEMM for this point, or None."""
    if point["M"] > 16 or point["bias"] or not point["x_dtype"] == point["w_dtype"] == "bfloat16":
        return None
    try:
        import flashinfer.gemm
    except Exception:  # noqa: BLE001 - any failure to import means: no peer here
        return None
    suffix = "_bf16" if point["out_dtype"] == "bfloat16" else ""
    return getattr(flashinfer.gemm, f"mm_M1_16_K{point['H']}_N{point['E']}{suffix}", None)


def unavailable(impl: str, point) -> str | None:
    """Why ``impl`` cannot run at ``point`` (the tier's own eligibility), or None."""
    if impl == "dispatch":
        return None
    if impl == "flashinfer":
        return None if _flashinfer(point) else "flashinfer is not installed or has no kernel for this shape/M"
    return router.OP.tier(impl).eligible(problem(point))


def make_inputs(point):
    h, e, m = point["H"], point["E"], point["M"]
    w_dtype, out_dtype = DT[point["w_dtype"]], DT[point["out_dtype"]]

    def make():
        x = torch.randn(m, h, device="cuda").to(DT[point["x_dtype"]])
        w = (torch.randn(e, h, device="cuda") / h ** 0.5).to(w_dtype)
        b = (torch.randn(e, device="cuda") * 0.1).to(w_dtype) if point["bias"] else None
        return x, w, b, torch.empty(m, e, dtype=out_dtype, device="cuda")
    return make


def _call(impl: str, pdl: bool, point):
    import cute_kernels
    import dispatch

    out_dtype = DT[point["out_dtype"]]
    if impl.startswith("cute-"):
        variant = impl.removeprefix("cute-")
        return lambda x, w, b, out: cute_kernels.router_gemm(x, w, b, out_dtype=out_dtype, out=out, pdl=pdl,
                                                             variant=variant)
    if impl == "dispatch":
        return lambda x, w, b, out: dispatch.router_gemm(x, w, b, out_dtype=out_dtype, out=out)
    if impl == "flashinfer":
        fn = _flashinfer(point)
        return lambda x, w, b, out: fn(x, w.t(), out, launch_with_pdl=pdl)  # it takes W as [H, E] column-major
    tier = router.OP.tier(impl).impl
    return lambda x, w, b, out: tier(x, w, b, out_dtype, out)


def measure(impl: str, pdl: bool, point, replays: int) -> dict:
    """Cold and hot us per call (``timing.time_per_call``), outputs poisoned and checked."""
    import dispatch
    from cute_kernels import reference

    out_dtype = DT[point["out_dtype"]]

    def poison(inputs):
        inputs[3].fill_(float("nan"))

    def check(inputs):
        x, w, b, out = inputs
        exact = reference.router_gemm(x, w, b, out_dtype=torch.float32).double()
        err = (torch.linalg.norm(out.double() - exact) / torch.linalg.norm(exact)).item()
        limit = 1e-5 if out_dtype == torch.float32 else 1e-2  # bf16 out: rounding, not a wrong sum
        if not err <= limit:
            raise AssertionError(f"{OP} {point['preset']} M={point['M']} {impl} pdl={pdl}: relative error {err:.3g}")

    result = timing.time_per_call(make_inputs(point), _call(impl, pdl, point), bytes_per_call=bytes_per_call(point),
                                  replays=replays, poison=poison, check=check)
    if impl == "dispatch":
        x, w, b, _ = make_inputs(point)()
        result["tier"] = dispatch.explain(OP, x, w, b, out_dtype=out_dtype).tier
    return result


def pdl_chain(m: int, producer: str, replays: int, pairs: int = 64) -> float:
    """us per router call in a graph of [producer writes x -> router(x)] pairs, minus the
    graph of producers alone (benchmarking.md). ``producer``: "torch" (an elementwise copy
    into x) or "early-release" (cute_kernels.pack_topk writing x's bytes: a PDL kernel that
    releases its dependents before it works)."""
    import cute_kernels

    make = make_inputs(points(["deepseek-v3"], sizes=[m])[0])
    sets = [make() for _ in range(pairs)]
    n = m * 7168 // 2  # int32 words in x
    k = 8 if n % 8 == 0 else 1
    srcs = [(torch.randint(0, 256, (n // k, k), dtype=torch.int32, device="cuda"),
             torch.rand(n // k, k, device="cuda"), torch.randn(m, 7168, device="cuda").to(torch.bfloat16))
            for _ in range(pairs)]

    def produce(x, src):
        if producer == "torch":
            x.copy_(src[2])
        else:
            cute_kernels.pack_topk(src[0], src[1], out=x.view(torch.int32).view(n // k, k))

    def graph(with_router: bool):
        for (x, w, b, out), src in zip(sets[:2], srcs[:2]):  # warm up outside the capture
            produce(x, src)
            cute_kernels.router_gemm(x, w, out=out)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for (x, w, b, out), src in zip(sets, srcs):
                produce(x, src)
                if with_router:
                    cute_kernels.router_gemm(x, w, out=out)
        return statistics.median(timing._replay_ms(g, replays))

    return (graph(True) - graph(False)) / pairs * 1e3


def extra_meta(pts, replays: int) -> dict:
    """The eager host cost at M = 1, DeepSeek-V3 shape (``bench_host_overhead``), and, when the
    sweep covers DeepSeek-V3, the PDL chain (a failed chain is left out)."""
    import bench_host_overhead

    overhead = bench_host_overhead.router_overhead()
    print(f"eager overhead per call at M=1 (us): {overhead}", flush=True)
    meta = {"eager_overhead_us": overhead}
    if "deepseek-v3" not in {p["preset"] for p in pts}:
        return meta
    chain = {}
    for m in (1, 16):
        for producer in ("torch", "early-release"):
            try:
                chain[f"M={m} {producer}"] = round(pdl_chain(m, producer, replays), 3)
            except Exception:  # noqa: BLE001 - the sweep's rows matter more than this figure
                traceback.print_exc()
    print(f"PDL chain, DeepSeek-V3 router per call (us): {chain}", flush=True)
    return {**meta, "pdl_chain_us": chain}


if __name__ == "__main__":
    from sweep import main

    sys.exit(main(["--op", OP, *sys.argv[1:]]))
