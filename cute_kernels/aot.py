"""Ahead-of-time kernels: build a directory of shared libraries, verify it, load from it.

``cute-kernels aot`` compiles every specialisation some model presets need, for each target
arch, on any machine (no GPU needed), in worker processes (``cute.compile`` is not thread-safe),
and links each into a shared library that loads with ``tvm_ffi`` alone (``runtime_shim``). The
directory holds those libraries and ``manifest.json``: per compile key, its file, arch, DSL
version, source fingerprint, sha256 and size. A re-run rebuilds only what is missing, damaged,
or built from other kernel sources, another DSL or another link recipe.

At run time (``compile.KernelCache``) an entry is used when its key and arch match and its
sha256 holds; where the DSL is installed its fingerprint must also match the installed sources.
Without the DSL the fingerprint cannot be computed, so the manifest is trusted. This module
imports nothing of the DSL until it builds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from . import compile as ck

MANIFEST = "manifest.json"
FORMAT = 1


def artifact_name(key_text: str) -> str:
    """Stable per key, so a rebuild replaces the old library instead of orphaning it."""
    return hashlib.sha256(key_text.encode()).hexdigest()[:24] + ".so"


def read_manifest(directory: Path) -> dict:
    data = json.loads((directory / MANIFEST).read_text())
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        raise ValueError(f"not a format-{FORMAT} cute-kernels AOT manifest")
    return data


def _write_manifest(directory: Path, data: dict) -> None:
    tmp = directory / f".{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, directory / MANIFEST)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- run time -------------------------------------------------------------------------------
class AotDir:
    """The runtime's read-only view of one AOT directory (re-read when its manifest changes)."""

    _open: dict = {}
    _open_lock = threading.Lock()

    @classmethod
    def open(cls, directory: Path) -> "AotDir":
        try:
            stamp = (directory / MANIFEST).stat().st_mtime_ns
        except OSError:
            stamp = None
        with cls._open_lock:
            view = cls._open.get(directory)
            if view is None or view.stamp != stamp:
                view = cls._open[directory] = cls(directory, stamp)
            return view

    def __init__(self, directory: Path, stamp):
        self.directory = directory
        self.stamp = stamp
        self._rejected: dict[str, str] = {}
        self._warned = False
        try:
            self.entries, self.error = read_manifest(directory)["entries"], None
        except (OSError, ValueError) as e:
            self.entries, self.error = {}, f"{directory / MANIFEST} is unusable ({e})"

    def find(self, key: ck.CompileKey) -> Path | None:
        """The library for ``key`` if its entry matches and its bytes hash right, else None."""
        text = key.describe()
        entry = self.entries.get(text)
        if self.error or entry is None:
            self._rejected[text] = self.error or f"{self.directory} has no entry for it"
            return None
        path = self.directory / entry["file"]
        if entry.get("arch") != key.arch:
            reason = f"its entry in {self.directory} is for {entry.get('arch')}"
        elif ck.dsl_available() and entry.get("fingerprint") != ck.source_fingerprint():
            reason = (f"{self.directory} was built from other kernel sources or DSL "
                      f"(fingerprint {entry.get('fingerprint')}, installed {ck.source_fingerprint()})")
        elif not path.is_file():
            reason = f"{path} is missing"
        elif _sha256(path) != entry.get("sha256"):
            reason = f"{path} does not match its sha256 in the manifest"
        else:
            return path
        self._reject(text, reason)
        return None

    def load(self, key: ck.CompileKey):
        """The compiled function for ``key`` from this directory, or None."""
        path = self.find(key)
        if path is None:
            return None
        import tvm_ffi

        try:
            return getattr(tvm_ffi.load_module(str(path)), ck._FUNCTION_NAME)
        except Exception as e:  # noqa: BLE001 - e.g. a library built against a newer libc
            self._reject(key.describe(), f"{path} does not load ({e})")
            return None

    def why_not(self, key: ck.CompileKey) -> str:
        return self._rejected.get(key.describe(), f"{self.directory} has no entry for it")

    def _reject(self, text: str, reason: str) -> None:
        self._rejected[text] = reason
        if not self._warned:  # a broken deployment, not a normal miss: say so once
            self._warned = True
            warnings.warn(f"cute-kernels: AOT artifact for {text} not used: {reason}", RuntimeWarning,
                          stacklevel=5)


# -- verify ---------------------------------------------------------------------------------
def verify(directory: Path) -> tuple[list[str], str]:
    """(problems, summary): every mismatch between the directory, its manifest and the sources."""
    try:
        entries = read_manifest(directory)["entries"]
    except (OSError, ValueError) as e:
        return [f"{directory / MANIFEST}: missing or unreadable ({e})"], ""
    fingerprint = ck.source_fingerprint() if ck.dsl_available() else None
    problems, listed, size = [], {MANIFEST}, 0
    for text, entry in sorted(entries.items()):
        name = entry.get("file", "?")
        listed.add(name)
        path = directory / name
        if not text.endswith(f"@{entry.get('arch')}"):
            problems.append(f"arch mismatch: {name} is listed for {entry.get('arch')} but its key is {text}")
        if not path.is_file():
            problems.append(f"missing file: {name} ({text})")
            continue
        size += path.stat().st_size
        if _sha256(path) != entry.get("sha256"):
            problems.append(f"sha256 mismatch: {name} ({text})")
        elif path.stat().st_size != entry.get("size"):
            problems.append(f"size mismatch: {name} ({text})")
        if fingerprint is not None and entry.get("fingerprint") != fingerprint:
            problems.append(f"stale fingerprint: {name} ({text}) was built from sources "
                            f"{entry.get('fingerprint')} with DSL {entry.get('dsl')}; installed: "
                            f"{fingerprint} with DSL {ck.dsl_version()}")
    problems += [f"unlisted file: {p.name}" for p in sorted(directory.iterdir()) if p.name not in listed]
    checked = "checked against the installed sources" if fingerprint else "not checked (no CuTe DSL installed)"
    return problems, f"{len(entries)} kernels, {size / 1e6:.1f} MB; fingerprints {checked}"


# -- build ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Job:
    key: str  # CompileKey.describe()
    arch: str
    kernel: object = None  # compiled from this kernel dataclass, or
    cached_object: Path | None = None  # linked from this JIT-cache object
    cached_seconds: float = 0.0


def preset_jobs(preset_names, archs, ops=None) -> list[Job]:
    """A job per kernel the presets need (filtered by kernel class or module name) per arch."""
    from . import catalog, presets

    kernels = list(dict.fromkeys(k for name in preset_names for k in catalog.preset_kernels(presets.get(name))))
    if ops:
        names = lambda k: {type(k).__name__, type(k).__module__.rsplit(".", 1)[-1]}  # noqa: E731
        known = sorted({n for k in kernels for n in names(k)})
        unknown = [op for op in ops if op.lower() not in {n.lower() for n in known}]
        if unknown:
            raise ValueError(f"--op {', '.join(unknown)} matches no kernel of these presets; "
                             f"choose from {', '.join(known)}")
        wanted = {op.lower() for op in ops}
        kernels = [k for k in kernels if {n.lower() for n in names(k)} & wanted]
    return [Job(ck.CompileKey.of(k, arch).describe(), arch, kernel=k) for arch in archs for k in kernels]


def kernel_of_key(key: str):
    """The kernel a compile-key description names (as manifests and ``cute-kernels cache`` list
    them: ``module.Class[field=value,...]@arch``), and its arch. ValueError if it names no
    kernel of these sources."""
    match = re.fullmatch(r"(\w+)\.(\w+)\[(.*)\]@(\w+)", key.strip())
    if not match:
        raise ValueError(f"not a compile key: {key!r}")
    module_name, class_name, config, arch = match.groups()
    try:
        cls = getattr(importlib.import_module(f"{__package__}.kernels.{module_name}"), class_name)
        values = dict(item.split("=", 1) for item in config.split(",")) if config else {}
        kernel = cls(**{name: _config_value(text) for name, text in values.items()})
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{key}: names no kernel of these sources ({e})") from None
    if ck.CompileKey.of(kernel, arch).describe() != key.strip():
        raise ValueError(f"{key}: does not round-trip (fields differ from these sources)")
    return kernel, arch


def _config_value(text: str):
    """Kernel config fields are str, int, bool or None; describe() wrote them with str()."""
    if text in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[text]
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def key_jobs(keys, archs=None) -> list[Job]:
    """A job per compile-key description (e.g. the keys a GPU run used, recorded there)."""
    jobs = []
    for key in keys:
        kernel, arch = kernel_of_key(key)
        if not archs or arch in archs:
            jobs.append(Job(key.strip(), arch, kernel=kernel))
    return jobs


def cache_jobs(archs=None) -> list[Job]:
    """A job per valid entry of the JIT disk cache of the installed sources (what a run compiled)."""
    jobs = []
    for meta in sorted(ck.KernelCache().directory.glob("*.json")):
        obj = meta.with_suffix(".o")
        try:
            info = json.loads(meta.read_text())
            ok = _sha256(obj) == info["sha256"]
        except (OSError, ValueError, KeyError):
            continue
        arch = info["key"].rsplit("@", 1)[-1]
        if ok and (not archs or arch in archs):
            jobs.append(Job(info["key"], arch, cached_object=obj, cached_seconds=info.get("compile_seconds", 0.0)))
    return jobs


@dataclasses.dataclass
class Summary:
    built: int = 0
    up_to_date: int = 0
    failed: list = dataclasses.field(default_factory=list)  # (key, message)
    seconds: float = 0.0
    bytes: int = 0  # of every library the requested jobs cover

    def line(self, out: Path) -> str:
        total = self.built + self.up_to_date + len(self.failed)
        return (f"{total} kernels: {self.built} built, {self.up_to_date} up to date, {len(self.failed)} failed "
                f"in {self.seconds:.1f} s; {self.bytes / 1e6:.1f} MB in {out}")


def build(jobs: list[Job], out: Path, workers: int | None = None, stream=None) -> Summary:
    """Builds what ``jobs`` ask for into ``out`` and updates its manifest after each library;
    progress goes to ``stream`` (stderr)."""
    from . import runtime_shim

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
        stamp = {"dsl": ck.dsl_version(), "fingerprint": ck.source_fingerprint(), "recipe": tc.recipe}
        todo = []
        for job in jobs:
            entry = manifest["entries"].get(job.key)
            if entry is not None and _up_to_date(out, entry, stamp):
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
                            summary.failed.append((job.key, str(e)))
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
            and _sha256(path) == entry.get("sha256"))


def _build_one(job: Job, out: str, tc, stamp: dict) -> dict:
    """In a worker process: compile (or take the cached object), link, install atomically."""
    from . import runtime_shim

    with tempfile.TemporaryDirectory(prefix="cute-kernels-aot-") as tmp:
        if job.cached_object is not None:
            obj, seconds = job.cached_object, job.cached_seconds
        else:
            begin = time.perf_counter()
            compiled = ck.compile_kernel(job.kernel, job.arch)
            seconds = time.perf_counter() - begin
            obj = Path(tmp) / "kernel.o"
            compiled.export_to_c(str(obj), function_name=ck._FUNCTION_NAME)
        name = artifact_name(job.key)
        lib = Path(tmp) / name
        runtime_shim.link(obj, lib, tc)
        final = Path(out) / name
        staged = final.with_name(f".{name}.tmp{os.getpid()}")
        shutil.copyfile(lib, staged)  # the temporary directory may be on another filesystem
        os.replace(staged, final)
    return {"file": name, "arch": job.arch, **stamp, "sha256": _sha256(final), "size": final.stat().st_size,
            "compile_seconds": round(seconds, 3)}


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


# -- command line ---------------------------------------------------------------------------
def main(args) -> int:
    """``cute-kernels aot``: build (presets or the JIT cache) into ``--out``, or ``--verify DIR``."""
    if args.verify:
        problems, summary = verify(Path(args.verify))
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{args.verify}: {len(problems)} problem(s)", file=sys.stderr)
            return 1
        print(f"{args.verify}: ok, {summary}")
        return 0
    if not args.out or not (args.preset or args.from_cache or args.keys) or (args.preset and not args.arch):
        print("cute-kernels aot: give --out DIR with --arch and --preset (or --from-cache, or --keys FILE), "
              "or --verify DIR", file=sys.stderr)
        return 2
    try:
        jobs = cache_jobs(args.arch) if args.from_cache else []
        if args.keys:
            lines = Path(args.keys).read_text().splitlines()
            jobs += key_jobs([line for line in lines if line.strip() and not line.startswith("#")], args.arch)
        jobs += preset_jobs(args.preset or [], args.arch or [], args.op)
    except ValueError as e:
        print(f"cute-kernels aot: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    summary = build(list({job.key: job for job in jobs}.values()), out, args.jobs)
    for key, message in summary.failed:
        print(f"FAILED {key}:\n{message}", file=sys.stderr)
    print(summary.line(out))
    return 1 if summary.failed else 0
