"""SiLU*Mul + FP8 group quant: what ``perf/sweep.py --op silu_mul_quant_fp8`` times, per
(T, H, group size, scale layout): the dispatcher's tiers ``cute`` (cute_kernels, PDL on and off)
and ``torch``, and torch.compile.

torch eager runs ``torch_baseline`` below (the spec's fp32 math without its argument checks, and
capturable in a CUDA graph); torch.compile compiles the same function. Speedups are over
torch.compile. Presets (``--preset``) sweep H = the preset's moe_intermediate_size. The chain's
producer writes x (the gate/up GEMM's output).

    python -m perf.benches silu_mul_quant_fp8 [sweep options]   # = python perf/sweep.py --op silu_mul_quant_fp8
"""

import torch

from cute_kernels import presets
from perf.bench import ALONE, B2B, Bench, Case, Impl, rename_impls

OP = "silu_mul_quant_fp8"
SIZES = [16, 256, 4096, 16384, 32768]
POINT = ("T", "H", "group_size", "scale_layout", "ue8m0")
FP8_MAX = 448.0
# (T, H, group_size, scale_layout): H = 2048 over every T, other H, group 64 and col scales at two T
DEFAULT = ([(t, 2048, 128, "row") for t in SIZES] + [(t, h, 128, "row") for h in (1536, 2560, 7168) for t in (16, 4096)]
           + [(t, 2048, 64, "row") for t in (16, 4096)] + [(t, 2048, 128, "col") for t in (16, 4096)])
QUICK = [(16, 2048, 128, "row"), (4096, 2048, 128, "row"), (4096, 2048, 64, "col")]
QUICK_SIZES = [16, 4096]


def _point(T, H, G, layout) -> dict:
    return {"T": T, "H": H, "group_size": G, "scale_layout": layout, "ue8m0": False}


def points(preset_names=None, shapes=None, sizes=None, quick=False) -> list:
    """Without presets or shapes: DEFAULT (QUICK with ``quick``; H = 2048, group 128, row scales
    at ``sizes`` when given). Per preset (H = its moe_intermediate_size) and ``--shape H``: row
    scales in groups of 128 (64 where H is not a multiple of 128) at each T."""
    if not preset_names and not shapes:
        if sizes:
            return [_point(T, 2048, 128, "row") for T in sizes]
        return [_point(*p) for p in (QUICK if quick else DEFAULT)]
    widths = [presets.get(name).moe_intermediate_size for name in preset_names or ()] + [int(s) for s in shapes or ()]
    return [_point(T, h, 128 if h % 128 == 0 else 64, "row")
            for h in dict.fromkeys(widths) for T in sizes or (QUICK_SIZES if quick else SIZES)]


def series(point) -> str:
    return f"H={point['H']} G={point['group_size']} {point['scale_layout']}"


def tuning_key(point):
    return ("bfloat16",), (point["H"],)


def bytes_per_call(point) -> int:
    """x read + q written + fp32 scales written."""
    T, H, G = point["T"], point["H"], point["group_size"]
    return T * 2 * H * 2 + T * H + T * (H // G) * 4


def torch_baseline(x, group_size: int, scale_layout: str):
    """Plain fp32 torch, as serving stacks write it; the spec's expressions."""
    T, H = x.shape[0], x.shape[1] // 2
    g, u = x[:, :H].float(), x[:, H:].float()
    y = (g / (1.0 + torch.exp(-g)) * u).view(T, H // group_size, group_size)
    scale = y.abs().amax(dim=-1, keepdim=True).clamp(min=1e-10) / FP8_MAX
    q = (y / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).view(T, H)
    scale = scale.squeeze(-1)
    return q, (scale if scale_layout == "row" else scale.t().contiguous().t())


_compiled = None


def compiled_baseline():
    global _compiled
    if _compiled is None:
        import torch._dynamo
        # One specialisation per (T, H, G, layout) point: keep them all rather than falling back.
        for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 1024)
        _compiled = torch.compile(torch_baseline, dynamic=False)
    return _compiled


def check_against_spec(x, q, s, G, layout, what):
    from cute_kernels import reference

    want_q, want_s = reference.silu_mul_quant_fp8(x, G, scale_layout=layout)
    if not torch.allclose(s, want_s, rtol=1e-6, atol=0.0, equal_nan=True):
        raise AssertionError(f"{what}: scales differ from the spec")
    gq, wq = q.double(), want_q.double()
    step = torch.exp2(torch.floor(torch.log2(torch.maximum(gq.abs(), wq.abs()).clamp_min(2.0**-6))) - 3)
    if not (torch.equal(gq.isnan(), wq.isnan()) and ((gq - wq).abs() <= step)[~wq.isnan()].all()):
        raise AssertionError(f"{what}: q differs from the spec by more than one e4m3 step (or was not written)")


def case(impl: str, pdl: bool, point) -> Case:
    """The call; the kernel's outputs poisoned and checked against the spec (torch.compile's
    result checked once, when it compiles)."""
    import cute_kernels

    T, H, G, layout = point["T"], point["H"], point["group_size"], point["scale_layout"]
    what = f"{OP} T={T} H={H} G={G} {layout} {impl} pdl={pdl}"

    def make_x():
        return torch.randn(T, 2 * H, device="cuda", dtype=torch.bfloat16) * 2

    if impl == "cute":
        def make():
            s = torch.empty_strided((T, H // G), (H // G, 1) if layout == "row" else (1, T), device="cuda")
            return make_x(), torch.empty(T, H, dtype=torch.float8_e4m3fn, device="cuda"), s

        def poison(inputs):
            inputs[1].view(torch.uint8).fill_(0x7F)  # fp8 NaN
            inputs[2].fill_(float("nan"))

        return Case(make, lambda x, q, s: cute_kernels.silu_mul_quant_fp8(x, G, scale_layout=layout, out=q, scales=s,
                                                                          pdl=pdl),
                    poison, lambda inputs: check_against_spec(*inputs, G, layout, what))
    fn = torch_baseline if impl == "torch" else compiled_baseline()
    if impl == "torch_compile":  # compile before timing; a failure raises here and is recorded
        x0 = make_x()
        q, s = fn(x0, G, layout)
        check_against_spec(x0, q, s, G, layout, what)
    return Case(lambda: (make_x(),), lambda x: fn(x, G, layout))


BENCH = Bench(
    op=OP, size="T", point_fields=POINT,
    impls=(
        Impl("cute", "cute_kernels.silu_mul_quant_fp8 (the dispatcher's cute tier)", pdl=True, pdl_off=True),
        Impl("torch", "torch_baseline eager (fp32 torch, the spec's math: the dispatcher's torch tier)"),
        Impl("torch_compile", "torch.compile(torch_baseline), mode default, dynamic=False", peer=True),
    ),
    baselines=("torch_compile", "torch"), inputs=("x",), main_input="x", modes=(B2B, ALONE),
    points=points, series=series, tuning_key=tuning_key, bytes_per_call=bytes_per_call, case=case,
    normalise=rename_impls({"cute_kernels": "cute"}),  # the earlier name of the cute tier's rows
)
