"""Router GEMM: what ``perf/sweep.py --op router_gemm`` times, per preset (or HxE shape) x M.

One implementation per dispatcher tier, plus the dispatcher itself:
- ``cute-dot``, ``cute-mma``: ``cute_kernels.router_gemm(variant=...)``, PDL on (``--pdl-off`` adds off);
- ``cublas``: ``torch.mm(x, W.T, out_dtype=float32)`` (+ bias), what a serving engine runs for 16-bit weights;
- ``torch``: fp32 ``F.linear`` without TF32, the path for fp32 weights;
- ``dispatch``: ``dispatch.router_gemm`` with the shipped tuning table; its rows name the tier it ran;
- ``flashinfer``: FlashInfer's router GEMM for its shapes at M <= 16, only where it is installed.
Each in modes b2b and chain (the producer writes x). Speedups are over ``cublas`` where it runs,
else ``torch``. Also measured: the chain after a producer that releases its dependents early,
for DeepSeek-V3 at M = 1 and 16 through the dispatcher (``meta.chain_after_early_release_us``).

    python -m perf.benches router_gemm [sweep options]   # = python perf/sweep.py --op router_gemm
"""

import traceback

import torch

from cute_kernels import presets, timing
from dispatch.ops import router_gemm as router
from perf.bench import B2B, CHAIN, Bench, Case, Impl
from perf.benches import host_overhead

OP = "router_gemm"
SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
POINT = ("preset", "H", "E", "x_dtype", "w_dtype", "out_dtype", "bias", "M")
QUICK_PRESETS = ["deepseek-v3", "minimax-m2", "gpt-oss-120b"]  # bf16; fp32 weights; bias + bf16 out
QUICK_SIZES = [1, 16, 128]
DT = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DISPATCH = "with the shipped tuning table (row field 'tier': the tier it ran)"


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
    """The dispatcher's tuning key (dispatch/tuning.py): (x, weight) dtypes and (H, E)."""
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


def poison_outputs(*outputs):
    """``poison(inputs)`` that fills the outputs at these positions of an input set with NaN."""
    def poison(inputs):
        for i in outputs:
            inputs[i].fill_(float("nan"))
    return poison


def check_close(what: str, got, want, limit: float) -> None:
    """Raises when ``got``'s relative Frobenius error against ``want`` exceeds ``limit`` (or is NaN)."""
    want = want.double()
    err = (torch.linalg.norm(got.double() - want) / torch.linalg.norm(want)).item()
    if not err <= limit:
        raise AssertionError(f"{what}: relative error {err:.3g}")


def case(impl: str, pdl: bool, point) -> Case:
    """The call, outputs poisoned and checked against the spec; the dispatcher's tier named."""
    import dispatch
    from cute_kernels import reference

    out_dtype = DT[point["out_dtype"]]
    limit = 1e-5 if out_dtype == torch.float32 else 1e-2  # bf16 out: rounding, not a wrong sum

    def check(inputs):
        x, w, b, out = inputs
        check_close(f"{OP} {point['preset']} M={point['M']} {impl} pdl={pdl}", out,
                    reference.router_gemm(x, w, b, out_dtype=torch.float32), limit)

    tier = None
    if impl == "dispatch":
        x, w, b, _ = make_inputs(point)()
        tier = dispatch.explain(OP, x, w, b, out_dtype=out_dtype).tier
    return Case(make_inputs(point), _call(impl, pdl, point), poison_outputs(3), check, tier)


def _early_release_producer(inputs):
    """A PDL kernel that releases its dependents before it works: cute_kernels.pack_topk writing
    x's bytes as int32 words (x's values are then garbage, so nothing is checked)."""
    import cute_kernels

    words = inputs[0].view(torch.int32)
    k = 8 if words.numel() % 8 == 0 else 1
    out = words.view(-1, k)
    ids = torch.randint(0, 256, out.shape, dtype=torch.int32, device=out.device)
    weights = torch.rand(out.shape, device=out.device)
    return lambda: cute_kernels.pack_topk(ids, weights, out=out)


def extra_meta(pts, replays: int) -> dict:
    """The eager host cost at M = 1, DeepSeek-V3 shape (``host_overhead``), and, when the sweep
    covers DeepSeek-V3, the dispatcher's chain after an early-release producer at M = 1 and 16
    (beside its chain rows, whose producer never releases early; a failed figure is left out)."""
    overhead = host_overhead.router_overhead()
    print(f"eager overhead per call at M=1 (us): {overhead}", flush=True)
    meta = {"eager_overhead_us": overhead}
    if "deepseek-v3" not in {p["preset"] for p in pts}:
        return meta
    chain = {}
    for point in points(["deepseek-v3"], sizes=[1, 16]):
        try:
            c = case("dispatch", True, point)
            r = timing.time_per_call(c.make, c.call, bytes_per_call=bytes_per_call(point), replays=replays,
                                     producer=_early_release_producer)
            chain[f"M={point['M']}"] = round(r["cold_us"], 3)
        except Exception:  # noqa: BLE001 - the sweep's rows matter more than this figure
            traceback.print_exc()
    print(f"chain after an early-release producer, DeepSeek-V3 router per call (us): {chain}", flush=True)
    return {**meta, "chain_after_early_release_us": chain}


BENCH = Bench(
    op=OP, size="M", point_fields=POINT,
    impls=(
        Impl("cute-dot", "cute_kernels.router_gemm(variant='dot')", pdl=True, pdl_off=True),
        Impl("cute-mma", "cute_kernels.router_gemm(variant='mma')", pdl=True, pdl_off=True),
        Impl("cublas", "dispatch tier cublas: torch.mm(x, W.T, out_dtype=float32) (+ bias)"),
        Impl("torch", "dispatch tier torch: F.linear in fp32, no TF32"),
        Impl("dispatch", f"dispatch.router_gemm {DISPATCH}", pdl=True),
        Impl("flashinfer", "flashinfer.gemm.mm_M1_16_K<H>_N<E>[_bf16] (specialised shapes, M <= 16)", pdl=True,
             pdl_off=True, peer=True),
    ),
    baselines=("cublas", "torch"), inputs=("x", "w", "b", "out"), main_input="x", modes=(B2B, CHAIN),
    points=points, series=series, tuning_key=tuning_key, bytes_per_call=bytes_per_call, case=case,
    unavailable=unavailable, extra_meta=extra_meta, normalise=normalise,
)
