"""What the config probes here share: compile a list of kernel configs ahead of time on every
core of the GPU host, then load them from there (so timing never waits on a JIT compile); check
and time one router config."""
import pathlib, tempfile, time

import torch
import cute_kernels
from cute_kernels import aot, compile as ck, timing


def compile_all(kernels, arch: str = "sm_90a", workers: int = 16) -> None:
    """Build each distinct config of ``kernels`` for ``arch`` into a fresh directory and make it
    the ahead-of-time directory the ops load from; prints the count, time and failures."""
    kernels = list(dict.fromkeys(kernels))
    t0 = time.time()
    lib = pathlib.Path(tempfile.mkdtemp())
    jobs = [aot.Job(ck.CompileKey.of(k, arch).describe(), arch, kernel=k) for k in kernels]
    summary = aot.build(jobs, lib, workers=workers)
    print(f"compiled {len(kernels)} configs in {time.time() - t0:.0f} s; failed {summary.failed}", flush=True)
    ck.set_aot_dir(lib)


def time_router(config, x, w, b=None, out_dtype=torch.float32, replays: int = 15):
    """``(cold_us, hot_us, err)`` of one router config: its relative Frobenius error against the
    float64 product of ``x``, ``w`` (and ``b``) into a NaN-poisoned output first, then per call
    on fresh inputs shaped and typed as these."""
    out = torch.full((x.shape[0], w.shape[0]), float("nan"), device=x.device, dtype=out_dtype)
    got = cute_kernels.router_gemm(x, w, b, out_dtype=out_dtype, out=out, config=config).double()
    want = x.double() @ w.double().T + (0 if b is None else b.double())
    err = ((got - want).norm() / want.norm()).item()
    fresh = lambda t: None if t is None else torch.randn_like(t)  # noqa: E731
    r = timing.time_per_call(lambda: (fresh(x), fresh(w), fresh(b), torch.empty_like(out)),
                             lambda x, w, b, o: cute_kernels.router_gemm(x, w, b, out_dtype=out_dtype, out=o,
                                                                         config=config),
                             bytes_per_call=w.numel() * w.element_size(), replays=replays)
    return r["cold_us"], r["hot_us"], err


def ncu_launches(launches) -> None:
    """For Nsight Compute (``--nvtx-include "probe/"``): each ``(label, call)`` once to load its
    kernel, then once more inside an NVTX range "probe", each alone on the GPU."""
    for _, call in launches:
        call()
    torch.cuda.synchronize()
    for label, call in launches:
        torch.cuda.nvtx.range_push("probe")
        call()
        torch.cuda.nvtx.range_pop()
        torch.cuda.synchronize()
        print(f"ncu launch {label}", flush=True)


def print_ranked(title, rows, label, tol: float, picks=(), limit=None) -> None:
    """``title``, then ``rows`` of ``(cold_us, hot_us, config, err, note)`` fastest first: "*"
    marks the configs in ``picks``, "WRONG" an error of ``tol`` or more; at most ``limit`` rows,
    plus one line for a pick ranked below them."""
    print(title)
    rows = sorted(rows, key=lambda r: r[0])
    for cold, hot, c, err, note in rows[:limit]:
        flag = "" if err < tol else "  WRONG"
        print(f"  {'*' if c in picks else ' '} cold {cold:5.2f} hot {hot:5.2f}  {label(c)}  err {err:.1e}{note}{flag}",
              flush=True)
    shown = rows[:limit]
    if not any(r[2] in picks for r in shown) and any(r[2] in picks for r in rows):
        print("  * pick: cold %.2f" % next(r[0] for r in rows if r[2] in picks), flush=True)


def router_rows(configs, x, w, b=None, out_dtype=torch.float32):
    """``time_router`` of each config as ``print_ranked`` rows."""
    rows = []
    for c in configs:
        cold, hot, err = time_router(c, x, w, b, out_dtype)
        rows.append((cold, hot, c, err, ""))
    return rows
