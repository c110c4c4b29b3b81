"""The ``cute-kernels`` command: demo, presets, cache, aot."""

from __future__ import annotations

import argparse
import shutil
import sys
import time


def _demo_compile(preset, arch: str) -> int:
    """No GPU: compile the preset's kernels for ``arch`` into the cache and report the times."""
    from . import catalog
    from .compile import KernelCache, default_cache

    kernels = catalog.preset_kernels(preset)
    cache = default_cache()
    print(f"compiling {len(kernels)} kernels of preset {preset.name} for {arch} into {cache.directory}")
    start = time.perf_counter()
    for kernel in kernels:
        cache.get(kernel, arch)
    reload = KernelCache()  # a fresh process's view: loads from disk
    for kernel in kernels:
        reload.get(kernel, arch)
    loads = {name: s for name, _, s in reload.stats.events}
    print(f"{'kernel':<96} {'compile s':>9} {'load s':>7}")
    for name, source, seconds in cache.stats.events:
        shown = f"{seconds:9.2f}" if source == "compile" else "   cached"
        print(f"{name:<96} {shown} {loads.get(name, float('nan')):7.3f}")
    print(f"done in {time.perf_counter() - start:.1f} s ({cache.stats.compiles} compiled, "
          f"{cache.stats.disk_loads} already cached)")
    return 0


def _demo_gpu(preset) -> int:
    """On a GPU: run the preset's ops, check them against the spec, time them beside torch."""
    import torch

    from . import ops, reference
    from .timing import device_meta, floor_us, time_per_call

    meta = device_meta()
    print(f"{meta['device']}: copy {meta['copy_gbps']} GB/s, graph launch floor "
          f"{meta['graph_launch_floor_us']} us; preset {preset.name} (top_k={preset.top_k})")
    print(f"{'op':<10} {'T':>6} {'cute us':>8} {'torch us':>9} {'floor us':>9} {'speedup':>8}")
    k = preset.top_k
    for t in (1, 16, 256, 4096):
        def make():
            ids = torch.randint(0, preset.num_experts, (t, k), dtype=torch.int32, device="cuda")
            return ids, torch.rand(t, k, device="cuda"), torch.empty(t, k, dtype=torch.int32, device="cuda")

        ids, w, out = make()
        if not torch.equal(ops.pack_topk(ids, w, out=out), reference.pack_topk(ids, w)):
            print(f"pack_topk T={t}: WRONG RESULT against the spec", file=sys.stderr)
            return 1
        nbytes = 3 * 4 * t * k
        cute = time_per_call(make, lambda i, w, o: ops.pack_topk(i, w, out=o), bytes_per_call=nbytes)
        ref = time_per_call(make, lambda i, w, o: reference.pack_topk(i, w), bytes_per_call=nbytes)
        print(f"{'pack_topk':<10} {t:>6} {cute['cold_us']:8.2f} {ref['cold_us']:9.2f} "
              f"{floor_us(nbytes, meta):9.2f} {ref['cold_us'] / cute['cold_us']:7.1f}x")
    return 0


def demo(args) -> int:
    from . import presets

    preset = presets.get(args.preset)
    if args.arch is None:
        import torch

        if torch.cuda.is_available():
            return _demo_gpu(preset)
        args.arch = "sm_90a"
    return _demo_compile(preset, args.arch)


def list_presets(args) -> int:
    from .presets import PRESETS

    print(f"{'preset':<20} {'hidden':>6} {'experts':>7} {'top_k':>5} {'gate':>9} {'bias':>5} {'logits':>8}")
    for p in PRESETS.values():
        print(f"{p.name:<20} {p.hidden_size:>6} {p.num_experts:>7} {p.top_k:>5} {p.gate_dtype:>9} "
              f"{str(p.gate_bias):>5} {p.logits_dtype:>8}")
    return 0


def cache(args) -> int:
    from .compile import KernelCache

    cache = KernelCache()
    if args.keys:  # one compile key per line: what `cute-kernels aot --keys FILE` builds
        for entry in cache.entries():
            print(entry.key)
        return 0
    root = cache.root
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    print(f"{root}: {len(cache.entries())} kernels of the installed DSL, "
          f"{sum(p.stat().st_size for p in files) / 1e6:.1f} MB in all")
    if args.clear and root.exists():
        shutil.rmtree(root)
        print("cleared")
    return 0


def aot(args) -> int:
    from . import aot

    return aot.main(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cute-kernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="on a GPU: run and time a preset's ops beside torch; "
                                    "without one: compile them and report compile/load times")
    p.add_argument("--preset", default="deepseek-v3")
    p.add_argument("--arch", default=None, help="compile only, for this target (e.g. sm_90a, sm_100a)")
    p.set_defaults(func=demo)
    sub.add_parser("presets", help="list the model presets").set_defaults(func=list_presets)
    p = sub.add_parser("cache", help="show (and --clear) the JIT kernel cache")
    p.add_argument("--clear", action="store_true")
    p.add_argument("--keys", action="store_true", help="print the compile key of every cached kernel, one per line")
    p.set_defaults(func=cache)
    p = sub.add_parser("aot", help="compile presets' kernels ahead of time into shared libraries that "
                                   "load without the CuTe DSL; or --verify such a directory")
    p.add_argument("--arch", action="append", help="target, repeatable (sm_90a, sm_100a)")
    p.add_argument("--preset", action="append", help="model preset, repeatable (see `cute-kernels presets`)")
    p.add_argument("--op", action="append", help="only these kernels of the presets (class or module "
                                                 "name, e.g. TopkPack or silu_mul_quant), repeatable")
    p.add_argument("--from-cache", action="store_true",
                   help="also link every kernel in the JIT cache (what earlier runs compiled)")
    p.add_argument("--keys", metavar="FILE", help="also build the kernels FILE lists, one compile key per line "
                   "(as manifests and `cute-kernels cache` print them; --arch filters them)")
    p.add_argument("--sm-count", type=int, default=132, help="SM count of the target GPUs, which the router "
                   "kernels' tiling depends on (132: H100 SXM)")
    p.add_argument("--out", help="the directory of libraries and manifest.json")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per CPU)")
    p.add_argument("--verify", metavar="DIR", help="check DIR against its manifest and the installed sources")
    p.set_defaults(func=aot)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
