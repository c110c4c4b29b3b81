"""Building ahead-of-time kernel directories (``cute-kernels aot``, whose command line is
``cute_kernels.cli``); reading them at run time is ``cute_kernels.aot_dir``.

``cute-kernels aot`` compiles every specialisation some model presets need, for each target
arch, on any machine (no GPU needed), in worker processes (``cute.compile`` is not thread-safe),
and links each into a shared library that loads with ``tvm_ffi`` alone (``runtime_shim``). The
directory holds those libraries and ``manifest.json`` (``aot_dir``). A re-run rebuilds only
what is missing, damaged, or built from other kernel sources, another DSL or another link
recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from . import catalog, keys, presets, runtime_shim
from .aot_dir import ERROR_LOG, FORMAT, MANIFEST, read_manifest, sha256
from .compile import KernelCache, compile_kernel
from .kernels.common import H100_SMS


def artifact_name(key_text: str) -> str:
    """Stable per key, so a rebuild replaces the old library instead of orphaning it."""
    return hashlib.sha256(key_text.encode()).hexdigest()[:24] + ".so"


def _write_manifest(directory: Path, data: dict) -> None:
    tmp = directory / f".{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, directory / MANIFEST)



@dataclasses.dataclass(frozen=True)
class Job:
    key: str  # CompileKey.describe()
    arch: str
    kernel: object = None  # compiled from this configuration, or
    cached: object = None  # linked (or copied) from this JIT-cache entry (compile.CacheEntry)


def _job(config, arch: str) -> Job:
    return Job(keys.CompileKey.of(config, arch).describe(), arch, kernel=config)


def preset_jobs(preset_names, archs, ops=None, sm_count: int = H100_SMS) -> list[Job]:
    """A job per kernel the presets need on a GPU of ``sm_count`` SMs (filtered by
    configuration class or family name) per arch."""
    for arch in archs:
        keys.check_arch(arch)
    kernels = list(dict.fromkeys(k for name in preset_names
                                 for k in catalog.preset_kernels(presets.get(name), num_sms=sm_count)))
    if ops:
        names = lambda k: {type(k).__name__, keys.family_of(k)}  # noqa: E731
        known = sorted({n for k in kernels for n in names(k)})
        unknown = [op for op in ops if op.lower() not in {n.lower() for n in known}]
        if unknown:
            raise ValueError(f"--op {', '.join(unknown)} matches no kernel of these presets; "
                             f"choose from {', '.join(known)}")
        wanted = {op.lower() for op in ops}
        kernels = [k for k in kernels if {n.lower() for n in names(k)} & wanted]
    return [_job(k, arch) for arch in archs for k in kernels]


def key_jobs(texts, archs=None) -> list[Job]:
    """A job per compile-key description (e.g. the keys a GPU run used, recorded there)."""
    jobs = []
    for text in texts:
        config, arch = keys.parse_key(text)
        keys.check_arch(arch)
        if not archs or arch in archs:
            jobs.append(_job(config, arch))
    return jobs


def cache_jobs(archs=None) -> list[Job]:
    """A job per valid entry of the JIT disk cache of the installed sources (what a run compiled)."""
    return [Job(e.key, e.arch, cached=e) for e in KernelCache().entries() if not archs or e.arch in archs]


_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_PTXAS_ERROR = re.compile(r"ptxas[^\n]*?\berror\s*:\s*([^\n]+)")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (the DSL colours its diagnostics)."""
    return _ANSI.sub("", text)


@dataclasses.dataclass(frozen=True)
class Failure:
    """A kernel that did not build: its key, one line saying why, and the full text for the log."""

    key: str
    reason: str
    text: str

    @classmethod
    def of(cls, key: str, error: BaseException) -> "Failure":
        lines = [line.strip() for line in strip_ansi(str(error)).splitlines() if line.strip()]
        # A compiler diagnostic opens with a headline ("error: PTX assembly failed") above the
        # source excerpt and the ptxas log; other errors say little without their type.
        reason = next((line for line in lines if "error" in line.lower()), None)
        if reason is None:
            reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        text = strip_ansi("".join(traceback.format_exception(error)))
        ptxas = _PTXAS_ERROR.search(text)  # the assembler's first complaint, which the headline does not say
        if ptxas is not None and ptxas.group(1).strip() not in reason:
            reason += f" (ptxas: {ptxas.group(1).strip()})"
        return cls(key, reason, text)


def write_error_log(out: Path, failures: list) -> Path | None:
    """The failures' full text (the worker's traceback included) in ``out/build-errors.log``;
    None, and an earlier build's log removed, when nothing failed."""
    log = out / ERROR_LOG
    if not failures:
        log.unlink(missing_ok=True)
        return None
    log.write_text("".join(f"=== {f.key}\n{f.text}\n" for f in failures))
    return log


@dataclasses.dataclass
class Summary:
    built: int = 0
    up_to_date: int = 0
    failed: list = dataclasses.field(default_factory=list)  # Failure
    seconds: float = 0.0
    bytes: int = 0  # of every library the requested jobs cover

    def line(self, out: Path) -> str:
        total = self.built + self.up_to_date + len(self.failed)
        return (f"{total} kernels: {self.built} built, {self.up_to_date} up to date, {len(self.failed)} failed "
                f"in {self.seconds:.1f} s; {self.bytes / 1e6:.1f} MB in {out}")


def build(jobs: list[Job], out: Path, workers: int | None = None, stream=None, sm_count: int = H100_SMS) -> Summary:
    """Builds what ``jobs`` ask for into ``out`` and updates its manifest after each library;
    progress goes to ``stream`` (stderr). ``sm_count``: the GPUs the router jobs were tiled
    for, recorded in the manifest."""
    stream = stream or sys.stderr
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    try:
        manifest = read_manifest(out)
    except FileNotFoundError:
        manifest = {"format": FORMAT, "entries": {}}
    except (OSError, ValueError) as e:
        stream.write(f"{out / MANIFEST} is unusable ({e}); rebuilding what was asked for\n")
        manifest = {"format": FORMAT, "entries": {}}
    summary = Summary()
    with tempfile.TemporaryDirectory(prefix="cute-kernels-aot-") as tmp:
        tc = runtime_shim.prepare(Path(tmp))
        manifest["toolchain"] = tc.describe()
        manifest["sm_count"] = sm_count
        stamp = {"dsl": keys.dsl_version(), "recipe": tc.recipe}
        todo = []
        for job in jobs:
            entry = manifest["entries"].get(job.key)
            if entry is not None and _up_to_date(out, entry, {**stamp, "fingerprint": keys.key_fingerprint(job.key)}):
                summary.up_to_date += 1
            else:
                todo.append(job)
        progress = Progress(len(todo), stream)
        if todo:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(workers or os.cpu_count() or 1, len(todo)), mp_context=ctx) as pool:
                pending = {pool.submit(_build_one, job, str(out), tc, stamp): job for job in todo}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        job = pending.pop(future)
                        try:
                            manifest["entries"][job.key] = future.result()
                            summary.built += 1
                            progress.step(job.key)
                        except Exception as e:  # noqa: BLE001 - report it, build the rest
                            summary.failed.append(Failure.of(job.key, e))
                            progress.step(f"FAILED {job.key}")
                        _write_manifest(out, manifest)
        _write_manifest(out, manifest)
    for job in jobs:
        entry = manifest["entries"].get(job.key)
        if entry is not None and (out / entry["file"]).is_file():
            summary.bytes += entry["size"]
    summary.seconds = time.perf_counter() - start
    return summary


def _up_to_date(out: Path, entry: dict, stamp: dict) -> bool:
    path = out / entry["file"]
    return (all(entry.get(k) == v for k, v in stamp.items()) and path.is_file()
            and sha256(path) == entry.get("sha256"))


def _build_one(job: Job, out: str, tc, stamp: dict) -> dict:
    """In a worker process: compile (or take the cached entry), link, install atomically."""
    with tempfile.TemporaryDirectory(prefix="cute-kernels-aot-") as tmp:
        name = artifact_name(job.key)
        lib = Path(tmp) / name
        cached, kernel = job.cached, job.kernel
        if cached is not None and cached.format == "so" and cached.recipe != tc.recipe:
            kernel, cached = keys.parse_key(job.key)[0], None  # linked by another recipe: rebuild
        if cached is not None:
            seconds = cached.compile_seconds
            if cached.format == "so":
                shutil.copyfile(cached.path, lib)
            else:
                runtime_shim.link(cached.path, lib, tc)
        else:
            begin = time.perf_counter()
            compiled = compile_kernel(kernel, job.arch)
            seconds = time.perf_counter() - begin
            obj = Path(tmp) / "kernel.o"
            compiled.export_to_c(str(obj), function_name=keys.FUNCTION_NAME)
            runtime_shim.link(obj, lib, tc)
        final = Path(out) / name
        staged = final.with_name(f".{name}.tmp{os.getpid()}")
        shutil.copyfile(lib, staged)  # the temporary directory may be on another filesystem
        os.replace(staged, final)
    return {"file": name, "arch": job.arch, **stamp, "fingerprint": keys.key_fingerprint(job.key), "sha256": sha256(final),
            "size": final.stat().st_size, "compile_seconds": round(seconds, 3)}


class Progress:
    """A progress line on stderr: redrawn in place on a terminal, one line per step otherwise."""

    def __init__(self, total: int, stream):
        self.total, self.done, self.stream = total, 0, stream
        self.tty = stream.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        filled = 24 * self.done // max(self.total, 1)
        text = f"[{'#' * filled}{'.' * (24 - filled)}] {self.done}/{self.total} {label}"
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + text[:width] + "\x1b[K" + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

