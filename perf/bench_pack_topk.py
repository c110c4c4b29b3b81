"""Top-k pack: what ``perf/sweep.py --op pack_topk`` times, per (ids, weights) dtype pair x T:
cute_kernels (PDL on and off) against the torch composite (the spec). Presets (``--preset``)
and ``--shape K`` set k (default 8).

    python perf/bench_pack_topk.py [sweep options]   # = python perf/sweep.py --op pack_topk
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere, installed or not
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cute_kernels import presets, timing  # noqa: E402

OP = FILE = "pack_topk"
SIZE = "T"
SIZES = [1, 4, 16, 64, 256, 1024, 4096, 16384]
QUICK_SIZES = [1, 64, 4096]
POINT = ("T", "k", "ids_dtype", "weights_dtype")
K = 8
NUM_IDS = 256  # ids drawn from [0, NUM_IDS), as with a 256-expert router
DTYPE_PAIRS = [("int32", "float32"), ("int64", "float32"), ("int32", "bfloat16")]
IMPLS = [("cute_kernels", True), ("cute_kernels", False), ("torch", False)]
PDL_IMPLS = ("cute_kernels",)
BASELINES = ("torch",)
TIERS = {("cute_kernels", True): "cute", ("torch", False): "torch"}
DESCRIPTIONS = {"cute_kernels": "cute_kernels.pack_topk", "torch": "cute_kernels.reference.pack_topk (the spec)"}
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


def measure(impl: str, pdl: bool, point, replays: int) -> dict:
    """Cold and hot us per call (``timing.time_per_call``); the kernel's output poisoned and checked."""
    import cute_kernels
    from cute_kernels import reference

    if impl == "cute_kernels":
        make = _make_inputs(point, with_out=True)

        def call(ids, weights, out):
            cute_kernels.pack_topk(ids, weights, out=out, pdl=pdl)

        def poison(inputs):
            inputs[2].fill_(SENTINEL)

        def check(inputs):
            ids, weights, out = inputs
            if not torch.equal(out, reference.pack_topk(ids, weights)):
                bad = (out != reference.pack_topk(ids, weights)).sum().item()
                raise AssertionError(f"{OP} {series(point)} T={point['T']} pdl={pdl}: {bad} wrong values")
    else:
        # The reference is the spec and allocates its own output: nothing to poison or check.
        make = _make_inputs(point, with_out=False)
        call, poison, check = reference.pack_topk, None, None

    return timing.time_per_call(make, call, bytes_per_call=bytes_per_call(point), replays=replays,
                                poison=poison, check=check)


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


if __name__ == "__main__":
    from sweep import main

    sys.exit(main(["--op", OP, *sys.argv[1:]]))
