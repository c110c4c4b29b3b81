"""Compile, cache and load kernels.

A kernel is a configuration of a family in ``cute_kernels.kernels``; its ``keys.CompileKey``
names it. Lookup: in-process dict -> ahead-of-time directory (``cute-kernels aot``, chosen by
``$CUTE_KERNELS_AOT_DIR`` or ``set_aot_dir``) -> disk cache -> compile.

Disk entries live in ``<cache root>/v2-dsl-<version>/``, named by the key's digest (which covers
the family's source fingerprint, so an edited family misses and the others still hit). An entry
is a shared library linked like an AOT artifact (loads with TVM-FFI alone: a warm cache never
imports the DSL) or, where no linker toolchain is installed, the exported object file (loaded
through the DSL), plus a JSON sidecar holding its key and sha256. Both files are written to
temporary names and renamed into place, and a reader loads the file only after its hash matches
the sidecar, so a truncated, corrupted or half-written entry is a miss (rebuilt), never a crash.
Compiles of one key are serialised across processes with a file lock, and the lock holder
re-checks the disk first: N processes racing on one key compile it once. Only the lock holder
removes a damaged entry (without the lock it may be a writer's between its two renames) and the
temporaries of writers that died. An unwritable cache directory degrades to memory-only with one
warning.

The DSL is imported only to compile (and to load an object-file entry): it is an optional
dependency of a process that runs ahead-of-time or cached kernels. This module never sees a
torch tensor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import tempfile
import threading
import time
import warnings
import weakref
from pathlib import Path

import filelock

from . import keys, runtime_shim
from .aot_dir import AotDir
from .keys import FUNCTION_NAME, CompileKey

CACHE_ENV = "CUTE_KERNELS_CACHE_DIR"
AOT_ENV = "CUTE_KERNELS_AOT_DIR"
CACHE_LAYOUT = "v2"  # entries named by per-family digests; shared libraries where linkable


class KernelUnavailableError(RuntimeError):
    """No compiled kernel can be had: it is in no AOT directory and the DSL is not installed."""


_aot_dir: Path | None = None


def set_aot_dir(path) -> None:
    """Load kernels from this ``cute-kernels aot`` directory first; None: use $CUTE_KERNELS_AOT_DIR."""
    global _aot_dir
    _aot_dir = Path(path) if path is not None else None


def aot_dir() -> Path | None:
    if _aot_dir is not None:
        return _aot_dir
    env = os.environ.get(AOT_ENV)
    return Path(env) if env else None


def implementation(config):
    """The kernel (DSL) object of a configuration: its family's ``KERNELS`` class, same fields."""
    module = importlib.import_module(f"{keys.KERNELS_PACKAGE}.{keys.family_of(config)}.kernel")
    cls = module.KERNELS[type(config)]
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})


def compile_kernel(config, arch: str):
    """Compile for an explicit target; works on a machine without a GPU."""
    keys.check_arch(arch)
    try:
        import cutlass.cute as cute
    except ImportError as e:
        raise KernelUnavailableError(f"cute-kernels: the CuTe DSL (nvidia-cutlass-dsl) cannot be imported to "
                                     f"compile {CompileKey.of(config, arch).describe()} ({e})") from e
    kernel = implementation(config)
    return cute.compile(kernel, *kernel.fake_args(), options=keys.COMPILE_OPTIONS.format(arch=arch))


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cute-kernels"


@dataclasses.dataclass
class Stats:
    """Counters per process; ``events`` holds (describe, source, seconds) for each first use."""

    memory_hits: int = 0
    aot_loads: int = 0
    disk_loads: int = 0
    compiles: int = 0
    corrupt_entries: int = 0
    events: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One valid disk entry: its key, arch, file, format ("so": a shared library, "o": an
    object file), how long it took to compile, and (for "so") the link recipe."""

    key: str
    arch: str
    path: Path
    format: str
    compile_seconds: float
    recipe: str | None = None


def _callable(compiled):
    """What a call should use: the TVM-FFI function inside the DSL's compiled object, as loading an
    exported object gives it. The object's own ``__call__`` adds Python frames to every launch
    (perf/NOTES.md, host overhead). Without a GPU the DSL makes no function: the object itself."""
    raw = getattr(compiled, "__tvm_ffi_object__", None)
    fn = raw() if raw is not None else None
    return compiled if fn is None else fn


def load_entry(path: Path, fmt: str):
    """The kernel function in a disk entry or AOT library."""
    if fmt == "so":
        import tvm_ffi  # a run-time dependency, loaded on the first library only

        return getattr(tvm_ffi.load_module(str(path)), FUNCTION_NAME)
    import cutlass.cute as cute  # an object file loads through the DSL

    return getattr(cute.runtime.load_module(str(path), enable_tvm_ffi=True), FUNCTION_NAME)


class _Memo(dict):
    """A dict that a weak reference can hold (a plain dict cannot)."""


class KernelCache:
    def __init__(self, directory: Path | None = None):
        self._explicit_dir = directory
        self._memory: dict[tuple, object] = {}  # (kernel, arch): frozen dataclasses hash cheaply
        self._memos = weakref.WeakValueDictionary()  # id -> a caller's own map to the functions above
        self._lock = threading.Lock()  # cute.compile is not thread-safe
        self._disk_ok: bool | None = None
        self._toolchain = None  # runtime_shim.Toolchain, False when none is installed
        self._toolchain_dir = None  # where its shim object lives, removed with the cache
        self.stats = Stats()

    @property
    def root(self) -> Path:
        return self._explicit_dir or default_cache_dir()

    @property
    def directory(self) -> Path:
        return self.root / f"{CACHE_LAYOUT}-dsl-{keys.dsl_version()}"

    def get(self, kernel, arch: str, sm_count: int | None = None):
        """The compiled function for ``kernel`` on ``arch``: memory -> AOT -> disk -> compile.
        ``sm_count``: the GPU's, for the AOT directory's messages."""
        fn = self.lookup_memory(kernel, arch)
        if fn is not None:
            return fn
        with self._lock:
            fn = self._memory.get((kernel, arch))
            if fn is None:
                key = CompileKey.of(kernel, arch)
                fn = self._load_aot(key, sm_count)
                if fn is None:
                    fn = self._load_or_compile(kernel, key)
                self._memory[(kernel, arch)] = fn
            return fn

    def lookup_memory(self, kernel, arch: str):
        """The compiled function if this process already holds it, else None (never loads)."""
        fn = self._memory.get((kernel, arch))
        if fn is not None:
            self.stats.memory_hits += 1
        return fn

    def contains(self, kernel, arch: str) -> bool:
        """True when ``get`` would not compile (in memory, a valid AOT artifact or disk entry)."""
        if (kernel, arch) in self._memory:
            return True
        key = CompileKey.of(kernel, arch)
        aot = self._aot()
        if aot is not None and aot.find(key) is not None:
            return True
        if not keys.dsl_available():
            return False
        return self._read_valid(self._meta_path(key), key) is not None

    def entries(self) -> list[CacheEntry]:
        """Every valid entry of this cache's directory (the installed DSL's), sorted by key."""
        found = []
        for meta in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else ():
            info = self._read_info(meta)
            if info is not None:
                found.append(CacheEntry(info["key"], info["key"].rsplit("@", 1)[-1], self._object_path(meta, info),
                                        info["format"], info.get("compile_seconds", 0.0), info.get("recipe")))
        return sorted(found, key=lambda e: e.key)

    def memo(self) -> dict:
        """An empty dict for a caller's own map to functions this cache hands out (an op's
        M -> function, so a call skips hashing the kernel); ``clear_memory`` empties it too."""
        memo = _Memo()
        self._memos[id(memo)] = memo
        return memo

    def clear_memory(self) -> None:
        self._memory.clear()
        for memo in list(self._memos.values()):
            memo.clear()

    # -- ahead-of-time directory ------------------------------------------------------------
    def _aot(self) -> AotDir | None:
        directory = aot_dir()
        return AotDir.open(directory) if directory is not None else None

    def _load_aot(self, key: CompileKey, sm_count: int | None):
        aot = self._aot()
        if aot is None:
            return None
        start = time.perf_counter()
        fn = aot.load(key, sm_count)
        if fn is not None:
            self.stats.aot_loads += 1
            self.stats.events.append((key.describe(), "aot", time.perf_counter() - start))
        return fn

    # -- disk -------------------------------------------------------------------------------
    def _meta_path(self, key: CompileKey) -> Path:
        return self.directory / f"{key.digest()}.json"

    def paths(self, key: CompileKey) -> tuple[Path, Path]:
        """``(file, sidecar)`` of ``key``'s entry: the file in the format this cache writes
        (a shared library where a linker toolchain is installed, else an object file)."""
        meta = self._meta_path(key)
        return meta.with_suffix(".so" if self._linker() else ".o"), meta

    @staticmethod
    def _object_path(meta: Path, info: dict) -> Path:
        return meta.with_suffix("." + info["format"])

    def _disk_usable(self) -> bool:
        if self._disk_ok is None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                probe = self.directory / f".probe-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
                self._disk_ok = True
            except OSError as e:
                warnings.warn(
                    f"cute-kernels: cache directory {self.directory} is not writable ({e}); "
                    f"compiled kernels are kept in memory only (set {CACHE_ENV} to change it)",
                    RuntimeWarning,
                    stacklevel=4,
                )
                self._disk_ok = False
        return self._disk_ok

    def _read_info(self, meta: Path) -> dict | None:
        """The sidecar's contents if the entry is complete and its object's hash matches."""
        try:
            info = json.loads(meta.read_text())
            if not isinstance(info, dict) or info.get("format") not in ("so", "o"):
                return None  # valid JSON, but not what a writer leaves
            data = self._object_path(meta, info).read_bytes()
        except (OSError, ValueError):
            return None
        return info if info.get("sha256") == hashlib.sha256(data).hexdigest() else None

    def _read_valid(self, meta: Path, key: CompileKey) -> tuple[Path, str] | None:
        info = self._read_info(meta)
        if info is None or info.get("key") != key.describe():
            return None
        return self._object_path(meta, info), info["format"]

    def _load_or_compile(self, kernel, key: CompileKey):
        if not keys.dsl_available():
            aot = self._aot()
            where = aot.why_not(key) if aot is not None else f"no AOT directory is set (${AOT_ENV})"
            raise KernelUnavailableError(
                f"cute-kernels: {key.describe()} is not compiled ahead of time ({where}) and the "
                "CuTe DSL (nvidia-cutlass-dsl) is not installed to compile it"
            )
        if not self._disk_usable():
            return self._compile(kernel, key, None)
        meta = self._meta_path(key)
        # Without the lock an incomplete entry may be a writer between its two renames: a miss,
        # left in place. The lock holder re-checks, and removes what is damaged.
        fn = self._try_load(meta, key, remove_damaged=False)
        if fn is not None:
            return fn
        try:
            lock = filelock.FileLock(str(meta.with_suffix(".lock")), timeout=600)
            with lock:  # another process may have just built it
                fn = self._try_load(meta, key, remove_damaged=True)
                if fn is not None:
                    return fn
                _remove_dead_writers_temporaries(meta)
                return self._compile(kernel, key, meta)
        except OSError as e:  # the directory went read-only or full under us
            warnings.warn(f"cute-kernels: cache write failed ({e}); continuing in memory", RuntimeWarning)
            return self._compile(kernel, key, None)

    def _try_load(self, meta: Path, key: CompileKey, remove_damaged: bool):
        objects = [meta.with_suffix(".so"), meta.with_suffix(".o")]
        if not meta.exists() and not any(p.exists() for p in objects):
            return None
        start = time.perf_counter()
        found = self._read_valid(meta, key)
        if found is not None:
            try:
                fn = load_entry(*found)
            except Exception:  # noqa: BLE001 - a foreign or damaged object is a miss
                fn = None
            if fn is not None:
                self.stats.disk_loads += 1
                self.stats.events.append((key.describe(), "disk", time.perf_counter() - start))
                return fn
        if not remove_damaged:
            return None
        self.stats.corrupt_entries += 1
        for p in (meta, *objects):
            with contextlib.suppress(OSError):
                p.unlink()
        return None

    def _linker(self):
        """The toolchain that links entries into libraries, or False where none is installed."""
        if self._toolchain is None:
            self._toolchain_dir = tempfile.TemporaryDirectory(prefix="cute-kernels-link-")
            try:
                self._toolchain = runtime_shim.prepare(Path(self._toolchain_dir.name))
            except (runtime_shim.ToolchainError, ImportError):
                self._toolchain = False
        return self._toolchain

    def _link(self, obj: Path, lib: Path) -> str | None:
        """Links an exported object into a TVM-FFI library (the recipe), or None where this
        machine has no linker toolchain (then the object itself is the entry)."""
        toolchain = self._linker()
        if not toolchain:
            return None
        runtime_shim.link(obj, lib, toolchain)
        return toolchain.recipe

    def _compile(self, kernel, key: CompileKey, meta: Path | None):
        start = time.perf_counter()
        compiled = compile_kernel(kernel, key.arch)
        seconds = time.perf_counter() - start
        self.stats.compiles += 1
        self.stats.events.append((key.describe(), "compile", seconds))
        if meta is None:
            return _callable(compiled)
        obj_tmp, lib_tmp, meta_tmp = (_temporary(meta.with_suffix(s)) for s in (".o", ".so", ".json"))
        try:
            compiled.export_to_c(str(obj_tmp), function_name=FUNCTION_NAME)
            recipe = self._link(obj_tmp, lib_tmp)
            fmt, tmp = ("so", lib_tmp) if recipe else ("o", obj_tmp)
            data = tmp.read_bytes()
            info = {"key": key.describe(), "sha256": hashlib.sha256(data).hexdigest(), "format": fmt,
                    "dsl": keys.dsl_version(), "fingerprint": key.fingerprint(), "compile_seconds": round(seconds, 3),
                    "recipe": recipe}
            meta_tmp.write_text(json.dumps(info))
            os.replace(tmp, meta.with_suffix("." + fmt))
            os.replace(meta_tmp, meta)
        except (OSError, RuntimeError) as e:  # RuntimeError: the link failed
            warnings.warn(f"cute-kernels: could not write {meta.with_suffix('')} ({e}); kept in memory",
                          RuntimeWarning)
        finally:
            for t in (obj_tmp, lib_tmp, meta_tmp):
                with contextlib.suppress(OSError):
                    t.unlink(missing_ok=True)
        return _callable(compiled)


_TMP = ".tmp"  # a temporary is the final name + ".tmp<writer's pid>"


def _temporary(path: Path) -> Path:
    return path.with_name(f"{path.name}{_TMP}{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM), or no valid pid: keep its file
        return True
    return True


def _remove_dead_writers_temporaries(meta: Path) -> None:
    """Removes the temporaries of ``meta``'s entry left by writers that died (killed mid-write).
    Called holding the entry's lock, before compiling it: a live writer's files are never touched."""
    for tmp in meta.parent.glob(f"{meta.stem}.*{_TMP}*"):
        pid = tmp.name.rpartition(_TMP)[2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


_default_cache: KernelCache | None = None


def default_cache() -> KernelCache:
    global _default_cache
    if _default_cache is None:
        _default_cache = KernelCache()
    return _default_cache
