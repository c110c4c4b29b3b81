"""Top-k pack: what ``perf/sweep.py --op pack_topk`` times, per (ids, weights) dtype pair x T:
the dispatcher's tiers ``cute`` (cute_kernels, PDL on and off) and ``torch`` (the composite of
the spec). Presets (``--preset``) and ``--shape K`` set k (default 8). The chain's producer
writes the weights (in a model the last kernel before the pack normalises them).

    python -m perf.benches pack_topk [sweep options]   # = python perf/sweep.py --op pack_topk
"""

import torch

from cute_kernels import presets, timing
from perf.bench import ALONE, B2B, Bench, Case, Impl, rename_impls

OP = "pack_topk"
SIZES = [1, 4, 16, 64, 256, 1024, 4096, 16384]
QUICK_SIZES = [1, 64, 4096]
POINT = ("T", "k", "ids_dtype", "weights_dtype")
K = 8
NUM_IDS = 256  # ids drawn from [0, NUM_IDS), as with a 256-expert router
DTYPE_PAIRS = [("int32", "float32"), ("int64", "float32"), ("int32", "bfloat16")]
# Any packed value has the id in its top 16 bits; ids < 256 keep it non-negative, so -1 can
# never be a real output and a slot still holding it means the kernel did not write there.
SENTINEL = -1


def points(preset_names=None, shapes=None, sizes=None, quick=False) -> list:
    ks = [presets.get(name).top_k for name in preset_names or ()] + [int(s) for s in shapes or ()]
    return [{"T": T, "k": k, "ids_dtype": ids, "weights_dtype": w}
            for k in dict.fromkeys(ks or [K]) for ids, w in DTYPE_PAIRS
            for T in sizes or (QUICK_SIZES if quick else SIZES)]


def series(point) -> str:
    return f"{point['ids_dtype']}/{point['weights_dtype']} k={point['k']}"


def tuning_key(point):
    return (point["ids_dtype"], point["weights_dtype"]), (point["k"],)


def bytes_per_call(point) -> int:
    """ids read + weights read + int32 out written."""
    ids = getattr(torch, point["ids_dtype"]).itemsize
    w = getattr(torch, point["weights_dtype"]).itemsize
    return point["T"] * point["k"] * (ids + w + 4)


def _make_inputs(point, with_out):
    shape = (point["T"], point["k"])

    def make():
        ids = torch.randint(0, NUM_IDS, shape, dtype=getattr(torch, point["ids_dtype"]), device="cuda")
        weights = torch.rand(shape, dtype=getattr(torch, point["weights_dtype"]), device="cuda")
        if not with_out:
            return ids, weights
        return ids, weights, torch.empty(shape, dtype=torch.int32, device="cuda")
    return make


def case(impl: str, pdl: bool, point) -> Case:
    """The call; the kernel's output poisoned and checked against the spec."""
    import cute_kernels
    from cute_kernels import reference

    if impl == "torch":  # the reference is the spec and allocates its own output: nothing to check
        return Case(_make_inputs(point, with_out=False), reference.pack_topk)

    def poison(inputs):
        inputs[2].fill_(SENTINEL)

    def check(inputs):
        ids, weights, out = inputs
        bad = (out != reference.pack_topk(ids, weights)).sum().item()
        if bad:
            raise AssertionError(f"{OP} {series(point)} T={point['T']} pdl={pdl}: {bad} wrong values")

    return Case(_make_inputs(point, with_out=True),
                lambda ids, weights, out: cute_kernels.pack_topk(ids, weights, out=out, pdl=pdl), poison, check)


def extra_meta(pts, replays: int) -> dict:
    """Host cost per eager call at T = 1 (the decode case)."""
    import cute_kernels
    from cute_kernels import reference

    ids, weights, out = _make_inputs({**pts[0], "T": 1}, with_out=True)()
    overhead = {
        "cute_kernels": round(timing.eager_overhead_us(
            lambda i, w, o: cute_kernels.pack_topk(i, w, out=o, pdl=True), (ids, weights, out)), 2),
        "torch": round(timing.eager_overhead_us(reference.pack_topk, (ids, weights)), 2),
    }
    print(f"eager overhead per call (us): {overhead}", flush=True)
    return {"num_ids": NUM_IDS, "eager_overhead_us": overhead,
            "cold": "R calls per graph, R = clamp(ceil(3 * L2 / bytes), 64, 2048); below 3 * L2 / 2048 bytes per "
                    "call (77 KB on H100) the rotation covers less than 3x L2 (see l2_multiple)"}


BENCH = Bench(
    op=OP, size="T", point_fields=POINT,
    impls=(
        Impl("cute", "cute_kernels.pack_topk (the dispatcher's cute tier)", pdl=True, pdl_off=True),
        Impl("torch", "cute_kernels.reference.pack_topk (the spec; the dispatcher's torch tier)"),
    ),
    baselines=("torch",), inputs=("ids", "weights"), main_input="weights", modes=(B2B, ALONE),
    points=points, series=series, tuning_key=tuning_key, bytes_per_call=bytes_per_call, case=case,
    extra_meta=extra_meta, normalise=rename_impls({"cute_kernels": "cute"}),  # the cute tier's earlier name
)
