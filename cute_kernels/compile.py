"""Compile, cache and load CuTe DSL kernels.

A kernel is a frozen dataclass of static configuration (see ``cute_kernels.kernels``). Its
``CompileKey`` is that configuration plus the target arch; the on-disk entry name also hashes the
DSL version and a fingerprint of the kernel sources, so a stale artifact can never be loaded.

Lookup: in-process dict -> ahead-of-time directory -> disk cache -> compile. An AOT directory
(``cute-kernels aot``, chosen by ``$CUTE_KERNELS_AOT_DIR`` or ``set_aot_dir``) holds shared
libraries that load with TVM-FFI alone, so a process without the CuTe DSL runs every kernel it
holds; a kernel it lacks raises ``KernelUnavailableError`` there.

Disk entries are an object file exported through TVM-FFI plus a JSON sidecar holding its sha256;
both are written to temporary names and renamed into place, and a reader loads the object only
after its hash matches the sidecar, so a truncated, corrupted or half-written entry is a miss
(rebuilt), never a crash.
Compiles of one key are serialised across processes with a file lock, and the lock holder
re-checks the disk first: N processes racing on one key compile it once. Only the lock holder
removes a damaged entry (without the lock it may be a writer's between its two renames) and
the temporaries of writers that died. An unwritable cache directory degrades to memory-only
with one warning.

This module knows kernels by their compile key only; it never sees a torch tensor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import threading
import time
import warnings
import weakref
from pathlib import Path

import filelock

CACHE_ENV = "CUTE_KERNELS_CACHE_DIR"
AOT_ENV = "CUTE_KERNELS_AOT_DIR"
_KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
_FUNCTION_NAME = "cute_kernel"  # the symbol every exported object carries


class KernelUnavailableError(RuntimeError):
    """No compiled kernel can be had: it is in no AOT directory and the DSL is not installed."""


@functools.lru_cache(maxsize=None)
def dsl_available() -> bool:
    """Whether the CuTe DSL can be imported (and so compile); checked without importing it."""
    try:
        return importlib.util.find_spec("cutlass") is not None
    except ImportError:
        return False


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


def dsl_version() -> str:
    try:
        return importlib.metadata.version("nvidia-cutlass-dsl")
    except importlib.metadata.PackageNotFoundError:
        import cutlass

        return cutlass.__version__


@functools.lru_cache(maxsize=None)
def source_fingerprint() -> str:
    """Hash of every kernel source file, this file, and the DSL / TVM-FFI versions."""
    h = hashlib.sha256()
    for path in sorted(_KERNEL_DIR.glob("*.py")) + [Path(__file__).resolve()]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(f"dsl={dsl_version()}".encode())
    try:
        h.update(f"tvm_ffi={importlib.metadata.version('apache-tvm-ffi')}".encode())
    except importlib.metadata.PackageNotFoundError:
        pass
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class CompileKey:
    kernel: str  # the kernel class, e.g. "topk_pack.TopkPack"
    config: tuple  # ((field, value), ...) of the kernel dataclass
    arch: str  # "sm_90a", "sm_100a"

    @classmethod
    def of(cls, kernel, arch: str) -> "CompileKey":
        module = type(kernel).__module__.rsplit(".", 1)[-1]
        config = tuple((f.name, getattr(kernel, f.name)) for f in dataclasses.fields(kernel))
        return cls(f"{module}.{type(kernel).__qualname__}", config, arch)

    def digest(self) -> str:
        text = repr((self.kernel, self.config, self.arch, dsl_version(), source_fingerprint()))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def describe(self) -> str:
        cfg = ",".join(f"{k}={v}" for k, v in self.config)
        return f"{self.kernel}[{cfg}]@{self.arch}"


def arch_of_capability(major: int, minor: int) -> str:
    """The arch-specific target (wgmma, setmaxnreg, TMA multicast need the 'a' variants)."""
    return f"sm_{major}{minor}a"


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


def compile_kernel(kernel, arch: str):
    """Compile for an explicit target; works on a machine without a GPU."""
    import cutlass.cute as cute

    return cute.compile(kernel, *kernel.fake_args(), options=f"--enable-tvm-ffi --gpu-arch {arch}")


def _callable(compiled):
    """What a call should use: the TVM-FFI function inside the DSL's compiled object, as loading an
    exported object gives it. The object's own ``__call__`` adds Python frames to every launch
    (0.75 us on the H100 host). Without a GPU the DSL makes no function: the object itself."""
    raw = getattr(compiled, "__tvm_ffi_object__", None)
    fn = raw() if raw is not None else None
    return compiled if fn is None else fn


def _load_object(path: Path):
    import cutlass.cute as cute

    module = cute.runtime.load_module(str(path), enable_tvm_ffi=True)
    return getattr(module, _FUNCTION_NAME)


class _Memo(dict):
    """A dict that a weak reference can hold (a plain dict cannot)."""


class KernelCache:
    def __init__(self, directory: Path | None = None):
        self._explicit_dir = directory
        self._memory: dict[tuple, object] = {}  # (kernel, arch): frozen dataclasses hash cheaply
        self._memos = weakref.WeakValueDictionary()  # id -> a caller's own map to the functions above
        self._lock = threading.Lock()  # cute.compile is not thread-safe
        self._disk_ok: bool | None = None
        self.stats = Stats()

    @property
    def directory(self) -> Path:
        root = self._explicit_dir or default_cache_dir()
        return root / f"dsl-{dsl_version()}-{source_fingerprint()}"

    def get(self, kernel, arch: str):
        """The compiled function for ``kernel`` on ``arch``: memory -> AOT -> disk -> compile."""
        fn = self.lookup_memory(kernel, arch)
        if fn is not None:
            return fn
        with self._lock:
            fn = self._memory.get((kernel, arch))
            if fn is None:
                key = CompileKey.of(kernel, arch)
                fn = self._load_aot(key)
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
        if not dsl_available():
            return False
        obj, meta = self._paths(key)
        return self._read_valid(obj, meta, key) is not None

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
    def _aot(self):
        directory = aot_dir()
        if directory is None:
            return None
        from .aot import AotDir  # imports nothing of the DSL

        return AotDir.open(directory)

    def _load_aot(self, key: CompileKey):
        aot = self._aot()
        if aot is None:
            return None
        start = time.perf_counter()
        fn = aot.load(key)
        if fn is not None:
            self.stats.aot_loads += 1
            self.stats.events.append((key.describe(), "aot", time.perf_counter() - start))
        return fn

    # -- disk -------------------------------------------------------------------------------
    def _paths(self, key: CompileKey) -> tuple[Path, Path]:
        base = self.directory / key.digest()
        return base.with_suffix(".o"), base.with_suffix(".json")

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

    def _read_valid(self, obj: Path, meta: Path, key: CompileKey) -> bytes | None:
        """The object's bytes if the entry is complete and its hash matches, else None."""
        try:
            info = json.loads(meta.read_text())
            data = obj.read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict):  # valid JSON, but not the object a writer leaves
            return None
        if info.get("sha256") != hashlib.sha256(data).hexdigest() or info.get("key") != key.describe():
            return None
        return data

    def _load_or_compile(self, kernel, key: CompileKey):
        if not dsl_available():
            aot = self._aot()
            where = aot.why_not(key) if aot is not None else f"no AOT directory is set (${AOT_ENV})"
            raise KernelUnavailableError(
                f"cute-kernels: {key.describe()} is not compiled ahead of time ({where}) and the "
                "CuTe DSL (nvidia-cutlass-dsl) is not installed to compile it"
            )
        if not self._disk_usable():
            return self._compile(kernel, key, None)
        obj, meta = self._paths(key)
        # Without the lock an incomplete entry may be a writer between its two renames: a miss,
        # left in place. The lock holder re-checks, and removes what is damaged.
        fn = self._try_load(obj, meta, key, remove_damaged=False)
        if fn is not None:
            return fn
        try:
            lock = filelock.FileLock(str(obj) + ".lock", timeout=600)
            with lock:  # another process may have just built it
                fn = self._try_load(obj, meta, key, remove_damaged=True)
                if fn is not None:
                    return fn
                _remove_dead_writers_temporaries(obj)
                return self._compile(kernel, key, (obj, meta))
        except OSError as e:  # the directory went read-only or full under us
            warnings.warn(f"cute-kernels: cache write failed ({e}); continuing in memory", RuntimeWarning)
            return self._compile(kernel, key, None)

    def _try_load(self, obj: Path, meta: Path, key: CompileKey, remove_damaged: bool):
        if not obj.exists() and not meta.exists():
            return None
        start = time.perf_counter()
        data = self._read_valid(obj, meta, key)
        if data is not None:
            try:
                fn = _load_object(obj)
            except Exception:  # noqa: BLE001 - a foreign or damaged object is a miss
                fn = None
            if fn is not None:
                self.stats.disk_loads += 1
                self.stats.events.append((key.describe(), "disk", time.perf_counter() - start))
                return fn
        if not remove_damaged:
            return None
        self.stats.corrupt_entries += 1
        for p in (obj, meta):
            try:
                p.unlink()
            except OSError:
                pass
        return None

    def _compile(self, kernel, key: CompileKey, dest: tuple[Path, Path] | None):
        start = time.perf_counter()
        compiled = compile_kernel(kernel, key.arch)
        seconds = time.perf_counter() - start
        self.stats.compiles += 1
        self.stats.events.append((key.describe(), "compile", seconds))
        if dest is None:
            return _callable(compiled)
        obj, meta = dest
        tmp, meta_tmp = _temporary(obj), _temporary(meta)
        try:
            compiled.export_to_c(str(tmp), function_name=_FUNCTION_NAME)
            data = tmp.read_bytes()
            info = {"key": key.describe(), "sha256": hashlib.sha256(data).hexdigest(),
                    "dsl": dsl_version(), "fingerprint": source_fingerprint(),
                    "compile_seconds": round(seconds, 3)}
            meta_tmp.write_text(json.dumps(info))
            os.replace(tmp, obj)
            os.replace(meta_tmp, meta)
        except OSError as e:
            warnings.warn(f"cute-kernels: could not write {obj} ({e}); kept in memory", RuntimeWarning)
            for t in (tmp, meta_tmp):
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


def _remove_dead_writers_temporaries(obj: Path) -> None:
    """Removes the temporaries of ``obj``'s entry left by writers that died (killed mid-write).
    Called holding the entry's lock, before compiling it: a live writer's files are never touched."""
    for tmp in obj.parent.glob(f"{obj.stem}.*{_TMP}*"):
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
