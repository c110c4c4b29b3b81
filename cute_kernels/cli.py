"""The cute-kernels command line: demo, presets, cache and aot.

Results go to stdout (a table or a summary line, or JSON with ``--json``), progress and
diagnostics to stderr. A bad argument is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

from . import __version__, aot, catalog, keys, presets, tolerance
from .aot_dir import verify
from .compile import KernelCache, KernelUnavailableError, default_cache

# SM counts of the GPUs --sm-count names (the router kernels' tiling depends on it).
GPU_SM_COUNTS = {"h100-sxm": 132, "h100-pcie": 114, "h100-nvl": 132, "h200": 132, "b200": 148}
DEFAULT_SM_COUNT = GPU_SM_COUNTS["h100-sxm"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line and status 2; argparse would print the usage above it."""
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout; shows the default of every option that has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and "%(default)" not in text and action.default is not False
                and action.default not in (None, argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text


def _argument(check):
    """An argparse type from ``check(text)``, whose ValueError message becomes the error."""
    def convert(text):
        try:
            return check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


_arch = _argument(keys.check_arch)
_preset = _argument(lambda name: presets.get(name).name)


@_argument
def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return int(text)


@_argument
def _sm_count(text: str) -> int:
    if text.lower() in GPU_SM_COUNTS:
        return GPU_SM_COUNTS[text.lower()]
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ValueError(f"expected a positive SM count or one of {', '.join(GPU_SM_COUNTS)}; got {text!r}")


@_argument
def _key_file(path: str) -> list[str]:
    """The compile keys FILE lists, one per line (blank lines and # comments skipped), each
    checked to name a kernel of these sources for a supported arch."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, ValueError) as e:  # ValueError: not text
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    found = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text and not text.startswith("#"):
            try:
                keys.check_arch(keys.parse_key(text)[1])
            except ValueError as e:
                raise ValueError(f"{path} line {number}: {e}") from None
            found.append(text)
    return found


def emit(args, data: dict, text: str | None) -> None:
    """A command's result on stdout: ``data`` as JSON with --json, else ``text`` (if any)."""
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        print()
    elif text is not None:
        print(text)


# -- demo -----------------------------------------------------------------------------------
M_VALUES = (1, 16, 128)  # rows of each call: tokens for pack_topk and silu_mul_quant_fp8


def run_demo(args) -> int:
    preset = presets.get(args.preset)
    if args.arch is None and torch.cuda.is_available():
        return _demo_gpu(args, preset)
    arch = args.arch or keys.SUPPORTED_ARCHS[0]
    why = "no GPU" if not torch.cuda.is_available() else f"--arch {arch}"
    print(f"{why}: compiling only (for {arch})", file=sys.stderr)
    try:
        data = compile_preset(preset, arch)
    except KernelUnavailableError as e:
        print(e, file=sys.stderr)
        return 1
    emit(args, data, compile_report(data))
    return 0


_SOURCES = {"compile": "compiled in {:.2f} s", "disk": "already cached", "aot": "from the AOT directory"}


def compile_preset(preset, arch: str) -> dict:
    """Compiles (or finds) every kernel ``preset`` needs for ``arch`` in the kernel cache, then
    loads each as a fresh process would; a progress step per kernel on stderr."""
    kernels = list(dict.fromkeys(catalog.preset_kernels(preset)))
    cache = default_cache()
    progress = aot.Progress(len(kernels), sys.stderr)
    start = time.perf_counter()
    for kernel in kernels:
        cache.get(kernel, arch)
        name, source, seconds = cache.stats.events[-1]  # each kernel once: every get leaves an event
        progress.step(f"{name} ({_SOURCES[source].format(seconds)})")
    reload = KernelCache()
    for kernel in kernels:
        reload.get(kernel, arch)
    loads = {name: seconds for name, _, seconds in reload.stats.events}
    rows = [{"key": name, "source": source, "compile_seconds": round(seconds, 3) if source == "compile" else None,
             "load_seconds": round(loads[name], 4)} for name, source, seconds in cache.stats.events]
    return {"mode": "compile", "preset": preset.name, "arch": arch, "cache": str(cache.directory), "kernels": rows,
            "compiled": cache.stats.compiles, "cached": len(rows) - cache.stats.compiles,
            "compile_seconds": round(sum(r["compile_seconds"] or 0 for r in rows), 2),
            "load_seconds": round(sum(loads.values()), 3), "seconds": round(time.perf_counter() - start, 2)}


def compile_report(data: dict) -> str:
    name, arch = data["preset"], data["arch"]
    return "\n".join([
        f"{len(data['kernels'])} kernels of preset {name} for {arch}: {data['compiled']} compiled in "
        f"{data['compile_seconds']:.1f} s, {data['cached']} already cached; loading them all from the cache "
        f"takes {data['load_seconds']:.3f} s",
        f"cache: {data['cache']}",
        f"on a GPU, `cute-kernels demo --preset {name}` runs them, checks them against the spec and times them",
        f"to deploy them without the CuTe DSL: `cute-kernels aot --arch {arch} --preset {name} --out kernels/`",
    ])


def _demo_gpu(args, preset) -> int:
    from .timing import device_meta

    meta = device_meta()
    print(f"{meta['device']}: {meta['sm_count']} SMs, copy {meta['copy_gbps']} GB/s, graph launch floor "
          f"{meta['graph_launch_floor_us']} us; preset {preset.name}", file=sys.stderr)
    rows = run_preset(preset)
    ok = all(row["error"] is None for row in rows)
    emit(args, {"mode": "run", "preset": preset.name, "device": meta, "rows": rows, "ok": ok}, run_table(rows))
    return 0 if ok else 1


class WrongResult(Exception):
    """An op's result is not the spec's within the tolerances."""


def run_preset(preset, device="cuda", m_values=M_VALUES) -> list[dict]:
    """Every op of ``preset`` through the dispatcher on ``device``: a row per call the preset
    makes (``Op.examples``) and M, with the tier that ran and its time beside the forced
    ``torch`` tier's (us per call, cold L2, in a CUDA graph), or why a result was wrong."""
    from dispatch import tiers

    todo = [(op, make, m) for op in tiers.OPS.values() for make in op.examples(preset, device) for m in m_values]
    progress = aot.Progress(len(todo), sys.stderr)
    rows = []
    for op, make, m in todo:
        rows.append(_measure(op, make, m))
        progress.step(f"{op.name} {rows[-1]['inputs']} M={m}")
    return rows


def _measure(op, make, m: int) -> dict:
    from dispatch import tiers

    from .timing import time_per_call

    names = [p.name for p in op.params]
    out_at = [names.index(name) for name in op.outputs]  # in the order the op returns them
    sample = make(m)
    results = op.run(*sample)  # builds the plan and loads the kernels before any capture
    results = results if isinstance(results, tuple) else (results,)

    def inputs():
        # Every input set its own copy of each tensor (the examples share weights across calls,
        # which would stay in L2) and preallocated outputs, poisoned before the timed replays.
        args = [a.clone() if isinstance(a, torch.Tensor) else a for a in make(m)]
        for i, result in zip(out_at, results):
            args[i] = torch.empty_like(result)
        return tuple(args)

    def poison(args):
        for i in out_at:
            if args[i] is not None:  # an output the call does not return (logits_out) stays unasked
                _poison(args[i])

    def check(args):
        why = tolerance.mismatch(op.name, dict(zip(names, args)), tuple(args[i] for i in out_at))
        if why is not None:
            raise WrongResult(why)

    args = inputs()
    nbytes = sum(a.nbytes for a in args if isinstance(a, torch.Tensor))
    explained = tiers.explain(op.name, *args)
    row = {"op": op.name, "m": m, "inputs": ",".join(_short(a.dtype) for i, a in enumerate(sample)
                                                     if isinstance(a, torch.Tensor) and i not in out_at),
           "call": explained.call, "tier": explained.tier, "cute_us": None, "torch_us": None, "speedup": None,
           "error": None}
    timed = explained.tier
    try:
        row["cute_us"] = time_per_call(inputs, op.run, bytes_per_call=nbytes, check=check, poison=poison)["cold_us"]
        timed = "torch"
        with tiers.force_tier(op.name, "torch"):
            row["torch_us"] = time_per_call(inputs, op.run, bytes_per_call=nbytes, check=check,
                                            poison=poison)["cold_us"]
    except WrongResult as e:
        row["error"] = f"tier {timed}: {e}"
        return row
    row["speedup"] = row["torch_us"] / row["cute_us"]
    return row


def _poison(t: torch.Tensor) -> None:
    """NaN; -1 in pack_topk's int32 output, which would take id 65535 and a NaN weight."""
    if t.dtype == torch.float8_e4m3fn:
        t.view(torch.uint8).fill_(0x7F)  # e4m3fn's NaN
    elif t.is_floating_point():
        t.fill_(float("nan"))
    else:
        t.fill_(-1)


_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "int32": "i32", "int64": "i64"}


def _short(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    return _SHORT.get(name, name)


def run_table(rows: list[dict]) -> str:
    """The GPU demo's table: per op, inputs and M, the tier that ran, its time and torch's."""
    lines = [f"{'op':<18} {'inputs':<14} {'M':>4}  {'tier':<9} {'cute us':>8} {'torch us':>9} {'speedup':>8}"]
    for r in rows:
        head = f"{r['op']:<18} {r['inputs']:<14} {r['m']:>4}  {r['tier']:<9}"
        if r["error"] is not None:
            lines.append(f"{head} WRONG RESULT: {r['error']}")
        else:
            lines.append(f"{head} {r['cute_us']:8.2f} {r['torch_us']:9.2f} {r['speedup']:7.1f}x")
    lines.append("us per call, cold L2, in a CUDA graph; torch: the op's torch tier, forced; "
                 "every result checked against the spec")
    return "\n".join(lines)


# -- presets --------------------------------------------------------------------------------
def list_presets(args) -> int:
    rows = list(presets.PRESETS.values())
    lines = [f"{'preset':<18} {'hidden':>6} {'experts':>7} {'top_k':>5} {'moe_h':>6} {'gate':>9} {'bias':>5} "
             f"{'logits':>8} {'norm':>5}  routing"]
    lines += [f"{p.name:<18} {p.hidden_size:>6} {p.num_experts:>7} {p.top_k:>5} {p.moe_intermediate_size:>6} "
              f"{p.gate_dtype:>9} {str(p.gate_bias):>5} {p.logits_dtype:>8} {str(p.norm_router):>5}  "
              f"{_routing(p.routing)}" for p in rows]
    emit(args, {"presets": [dataclasses.asdict(p) for p in rows]}, "\n".join(lines))
    return 0


def _routing(r) -> str:
    parts = [r.scoring]
    if r.n_group > 1:
        parts.append(f"best {r.topk_group} of {r.n_group} groups")
    if r.correction_bias:
        parts.append("correction bias")
    if r.renormalize:
        parts.append("renormalized")
    if r.scaling != 1.0:
        parts.append(f"x{r.scaling:g}")
    return ", ".join(parts)


# -- cache ----------------------------------------------------------------------------------
def show_cache(args) -> int:
    if args.keys and args.json:
        args.error("--keys prints one key per line; --json lists them with the rest: give one of them")
    cache = KernelCache()
    entries = cache.entries()
    if args.keys:  # what `cute-kernels aot --keys FILE` builds
        for entry in entries:
            print(entry.key)
        return 0
    root = cache.root
    listed = [{"key": e.key, "arch": e.arch, "format": e.format, "bytes": e.path.stat().st_size,
               "compile_seconds": e.compile_seconds} for e in entries]
    data = {"root": str(root), "directory": str(cache.directory), "dsl": keys.dsl_version(), "entries": listed,
            "count": len(listed), "bytes": sum(e["bytes"] for e in listed),
            "root_bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0,
            "cleared": bool(args.clear and root.exists())}
    archs = ", ".join(f"{arch}: {sum(e['arch'] == arch for e in listed)}"
                      for arch in sorted({e["arch"] for e in listed}))
    text = (f"{data['directory']}: {data['count']} kernels{f' ({archs})' if archs else ''}, "
            f"{data['bytes'] / 1e6:.1f} MB; {data['root_bytes'] / 1e6:.1f} MB under {root} in all")
    if data["cleared"]:
        shutil.rmtree(root)
        text += f"\nremoved {root}"
    emit(args, data, text)
    return 0


# -- aot ------------------------------------------------------------------------------------
def build_aot(args) -> int:
    """Builds presets' kernels, the JIT cache's or a key list's into --out, or checks --verify DIR."""
    if args.verify:
        return _verify(args)
    if not (args.preset or args.from_cache or args.keys is not None):
        args.error("nothing to build: give --preset NAME (with --arch), --from-cache or --keys FILE")
    if args.preset and not args.arch:
        args.error(f"--preset needs --arch (supported: {', '.join(keys.SUPPORTED_ARCHS)})")
    if args.op and not args.preset:
        args.error("--op selects among the kernels of --preset: give --preset")
    try:
        jobs = aot.cache_jobs(args.arch) if args.from_cache else []
        jobs += aot.key_jobs(args.keys or [], args.arch)
        jobs += aot.preset_jobs(args.preset or [], args.arch or [], args.op, args.sm_count)
    except ValueError as e:
        args.error(str(e))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        args.error(f"--out {out} is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        args.error(f"--out {out}: {e.strerror}")
    jobs = list({job.key: job for job in jobs}.values())
    summary = aot.build(jobs, out, args.jobs, sm_count=args.sm_count)
    log = aot.write_error_log(out, summary.failed)
    for failure in summary.failed:
        print(f"FAILED {failure.key}: {failure.reason}", file=sys.stderr)
    if log is not None:
        print(f"{len(summary.failed)} kernel(s) failed; the full compiler output is in {log}", file=sys.stderr)
    emit(args, {"out": str(out), "archs": sorted({job.arch for job in jobs}), "sm_count": args.sm_count,
                "built": summary.built, "up_to_date": summary.up_to_date,
                "failed": [{"key": f.key, "reason": f.reason} for f in summary.failed],
                "error_log": None if log is None else str(log), "seconds": round(summary.seconds, 3),
                "bytes": summary.bytes}, summary.line(out))
    return 1 if summary.failed else 0


def _verify(args) -> int:
    if args.preset or args.arch or args.op or args.from_cache or args.keys is not None:
        args.error("--verify DIR checks a built directory: drop the build options")
    problems, summary = verify(Path(args.verify))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems and not args.json:
        print(f"{args.verify}: {len(problems)} problem(s)", file=sys.stderr)
    emit(args, {"directory": args.verify, "ok": not problems, "problems": problems, "summary": summary},
         None if problems else f"{args.verify}: ok, {summary}")
    return 1 if problems else 0


# -- the parser -----------------------------------------------------------------------------
DESCRIPTION = """\
CuTe DSL kernels for the small, latency-bound ops around Mixture-of-Experts
routing (router GEMMs, RMSNorm + router, SiLU*Mul + FP8 quantisation, top-k
packing): try them on a model preset, list the presets, inspect the kernel
cache, and build kernel libraries that deploy without the CuTe DSL."""

EXAMPLES = """\
  cute-kernels demo               run, check and time the deepseek-v3 ops
  cute-kernels presets --json     every preset with its routing, as JSON
  cute-kernels cache              where the kernel cache is, what it holds
  cute-kernels aot --arch sm_90a --preset deepseek-v3 --out kernels/
  cute-kernels aot --help         the options of one command"""

_SM_NAMES = ", ".join(f"{name}={count}" for name, count in GPU_SM_COUNTS.items())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cute-kernels", description=DESCRIPTION, epilog="examples:\n" + EXAMPLES,
                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    json_option = _Parser(add_help=False)
    json_option.add_argument("--json", action="store_true", help="print the result as JSON on stdout "
                             "(progress and diagnostics stay on stderr)")

    def command(name, func, summary, description, examples):
        p = sub.add_parser(name, help=summary, description=description, epilog="examples:\n" + examples,
                           formatter_class=_Formatter, parents=[json_option])
        p.set_defaults(func=func, error=p.error)
        return p

    p = command("demo", run_demo, "run, check and time a preset's ops on the GPU (without one: compile them)", """\
On a GPU: run every op of a model preset through the dispatcher for M = 1, 16
and 128 rows (tokens for pack_topk and silu_mul_quant_fp8), check each result
against the spec (cute_kernels.reference) and time it beside the op's torch
tier: us per call, cold L2, in a CUDA graph.

Without a GPU, or with --arch: compile the preset's kernels into the kernel
cache and report compile and load times.""", """\
  cute-kernels demo
  cute-kernels demo --preset gpt-oss-20b --json
  cute-kernels demo --arch sm_100a     compile for Blackwell, on any machine""")
    p.add_argument("--preset", type=_preset, default="deepseek-v3", metavar="NAME",
                   help="model preset; cute-kernels presets lists them")
    p.add_argument("--arch", type=_arch, help=f"compile only, for this target: {' or '.join(keys.SUPPORTED_ARCHS)} "
                   f"(without a GPU: {keys.SUPPORTED_ARCHS[0]})")

    command("presets", list_presets, "list the model presets", """\
List the model presets: per MoE model its hidden size, experts, top-k, expert
FFN width (moe_h), gate and logits dtypes, gate bias, fused RMSNorm (norm) and
routing.""", """\
  cute-kernels presets
  cute-kernels presets --json | jq '.presets[] | {name, routing}'""")

    p = command("cache", show_cache, "show (or clear) the JIT kernel cache", """\
Show the JIT kernel cache: its directory for the installed CuTe DSL (under
$CUTE_KERNELS_CACHE_DIR, else ~/.cache/cute-kernels), how many kernels it
holds and their size.""", """\
  cute-kernels cache
  cute-kernels cache --keys > keys.txt   what this machine compiled, for
                                         cute-kernels aot --keys elsewhere
  cute-kernels cache --clear""")
    p.add_argument("--clear", action="store_true", help="remove the whole cache (every DSL version's)")
    p.add_argument("--keys", action="store_true", help="print the compile key of every cached kernel, one per line")

    p = command("aot", build_aot, "build kernel libraries ahead of time that load without the CuTe DSL "
                "(or --verify)", f"""\
Compile the kernels some presets need (or those a key list or the JIT cache
names) for each target arch, on any machine (no GPU needed), and link each into
a shared library that loads with apache-tvm-ffi alone. The directory holds the
libraries and manifest.json; a re-run rebuilds only what is missing, damaged or
built from other sources. A kernel that fails to build gets one line on stderr,
the full compiler output goes to {aot.ERROR_LOG} in the directory, and the exit
status is 1. --verify DIR checks a built directory.

GPU names for --sm-count:
  {_SM_NAMES}""", """\
  cute-kernels aot --arch sm_90a --arch sm_100a --preset deepseek-v3 \\
                   --preset kimi-k2 --out kernels/
  cute-kernels aot --arch sm_90a --preset gpt-oss-120b --sm-count h100-pcie \\
                   --out kernels/
  cute-kernels aot --keys keys.txt --out kernels/   the kernels that
                   cute-kernels cache --keys listed on a GPU machine
  cute-kernels aot --verify kernels/""")
    p.add_argument("--arch", type=_arch, action="append",
                   help=f"target, repeatable: {', '.join(keys.SUPPORTED_ARCHS)}; also filters --keys and --from-cache")
    p.add_argument("--preset", type=_preset, action="append", metavar="NAME",
                   help="model preset, repeatable; cute-kernels presets lists them")
    p.add_argument("--op", action="append", help="only these kernels of the presets (class or family name, "
                   "e.g. PackTopk or silu_mul_quant_fp8), repeatable")
    p.add_argument("--from-cache", action="store_true",
                   help="also link every kernel in the JIT cache (what earlier runs compiled)")
    p.add_argument("--keys", type=_key_file, metavar="FILE", help="also build the kernels FILE lists, one "
                   "compile key per line (as manifests and cute-kernels cache --keys print them)")
    p.add_argument("--sm-count", type=_sm_count, default=DEFAULT_SM_COUNT, metavar="N|GPU",
                   help=f"SM count of the target GPUs, which the router kernels' tiling depends on: a number "
                        f"or a GPU name, {_SM_NAMES}")
    p.add_argument("--jobs", type=_positive, metavar="N", help="worker processes (default: one per CPU)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="DIR", help="build into DIR (libraries and manifest.json)")
    where.add_argument("--verify", metavar="DIR", help="check DIR against its manifest and the installed sources")
    return parser


def main(argv=None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # argparse would name the top-level command, not the one they were given to
        args.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        status = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, where it can be caught
    except BrokenPipeError:
        # `cute-kernels presets | head`: stop quietly, with the status SIGPIPE gives. Python's
        # docs: point stdout at devnull, or the interpreter's last flush fails again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return status


if __name__ == "__main__":
    sys.exit(main())
