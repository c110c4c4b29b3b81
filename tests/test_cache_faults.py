"""Faults in the on-disk kernel cache: damaged and foreign files, other DSL versions and sources,
read-only and full directories, writers killed mid-write. Each must cost at most a recompile:
never a crash, never a partial or foreign file loaded as valid. Compiling for sm_90a needs no GPU.
"""

import errno
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import filelock
import pytest

from cute_kernels import compile as ck
from cute_kernels.kernels.pack_topk import PackTopk

ARCH = "sm_90a"
KERNEL = PackTopk("int32", "float32", 8, 8, True)
OTHER = PackTopk("int64", "float32", 8, 8, True)


def entry(kernel=KERNEL):
    """The (object, sidecar) paths of ``kernel``'s entry in the current cache directory."""
    return ck.KernelCache().paths(ck.CompileKey.of(kernel, ARCH))


@pytest.fixture(scope="module")
def good_entry(tmp_path_factory):
    """The bytes of a valid entry for KERNEL (object, sidecar), compiled once for the module."""
    mp = pytest.MonkeyPatch()
    mp.setenv(ck.CACHE_ENV, str(tmp_path_factory.mktemp("good")))
    ck.KernelCache().get(KERNEL, ARCH)
    obj, meta = entry()
    data = obj.read_bytes(), meta.read_text()
    mp.undo()
    return data


@pytest.fixture
def installed(cache_dir, good_entry):
    """The private cache holding a valid entry for KERNEL; returns its (object, sidecar) paths."""
    obj, meta = entry()
    obj.parent.mkdir(parents=True)
    obj.write_bytes(good_entry[0])
    meta.write_text(good_entry[1])
    return obj, meta


def listing(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file() and not p.name.endswith(".lock")}


def assert_rebuilt_and_valid():
    """A fresh process compiles once, and the one after it loads that entry from disk."""
    c = ck.KernelCache()
    assert callable(c.get(KERNEL, ARCH))
    assert c.stats.compiles == 1 and c.stats.disk_loads == 0, c.stats
    again = ck.KernelCache()
    assert callable(again.get(KERNEL, ARCH))
    assert (again.stats.disk_loads, again.stats.compiles) == (1, 0), again.stats
    return c


# -- damaged and foreign files -------------------------------------------------------------------
def _sidecar(meta, **fields):
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **fields}))


def _flip_middle_byte(obj):
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))


DAMAGE = {
    "object empty": lambda obj, meta: obj.write_bytes(b""),
    "object with one byte flipped": lambda obj, meta: _flip_middle_byte(obj),
    "object missing": lambda obj, meta: obj.unlink(),
    "object a symlink to another file": lambda obj, meta: (obj.unlink(), obj.symlink_to(meta)),
    "object garbage with a matching hash": lambda obj, meta: (  # hash checks pass; loading fails
        obj.write_bytes(b"\x7fELF not an object"),
        _sidecar(meta, sha256=hashlib.sha256(b"\x7fELF not an object").hexdigest())),
    "sidecar truncated": lambda obj, meta: meta.write_text(meta.read_text()[:20]),
    "sidecar binary": lambda obj, meta: meta.write_bytes(bytes(range(256))),
    "sidecar empty object": lambda obj, meta: meta.write_text("{}"),
    "sidecar hash of another object": lambda obj, meta: _sidecar(meta, sha256="0" * 64),
    "sidecar hash not a string": lambda obj, meta: _sidecar(meta, sha256=7),
    "sidecar JSON list": lambda obj, meta: meta.write_text("[]"),
    "sidecar JSON null": lambda obj, meta: meta.write_text("null"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_entry_costs_one_recompile(installed, damage):
    obj, meta = installed
    DAMAGE[damage](obj, meta)
    c = assert_rebuilt_and_valid()
    assert c.stats.corrupt_entries >= 1


def test_symlinked_object_target_is_left_alone(installed, tmp_path):
    """Removing a damaged entry removes the link, never the file it points to."""
    obj, _ = installed
    target = tmp_path / "someone-elses-file"
    target.write_bytes(b"keep me")
    obj.unlink()
    obj.symlink_to(target)
    assert_rebuilt_and_valid()
    assert target.read_bytes() == b"keep me"


def test_directory_in_place_of_an_entry(installed):
    """A directory where the object belongs can be neither loaded nor replaced: compile, warn, run."""
    obj, meta = installed
    obj.unlink()
    obj.mkdir()
    c = ck.KernelCache()
    with pytest.warns(RuntimeWarning, match="could not write"):
        assert callable(c.get(KERNEL, ARCH))
    assert c.stats.compiles == 1 and obj.is_dir()


def test_foreign_files_are_ignored(installed):
    """Stray files, other keys' entries and stale temporaries do not disturb a lookup."""
    obj, meta = installed
    d = obj.parent
    (d / "README").write_text("not an entry")
    (d / ("f" * 32 + obj.suffix)).write_bytes(b"an entry of no key")
    (d / ("f" * 32 + ".json")).write_text("{}")
    obj.with_name(obj.name + ".tmp1").write_bytes(b"half of an object")  # a writer killed mid-write
    before = listing(d)
    c = ck.KernelCache()
    assert callable(c.get(KERNEL, ARCH)) and (c.stats.disk_loads, c.stats.compiles) == (1, 0)
    assert callable(c.get(OTHER, ARCH)) and c.stats.compiles == 1
    assert {k: v for k, v in listing(d).items() if k in before} == before


@pytest.mark.parametrize("attr,value", [("dsl_version", lambda: "0.0.0"),
                                        ("family_fingerprint", lambda family: "0123456789abcdef")])
def test_entries_of_other_dsl_versions_and_sources_are_never_loaded(installed, monkeypatch, attr, value):
    """Another DSL's entries sit in another directory; other sources' have other names."""
    from cute_kernels import keys

    obj, _ = installed
    theirs = listing(obj.parent)
    with monkeypatch.context() as m:
        m.setattr(keys, attr, value)  # this process now has another DSL or other sources
        c = ck.KernelCache()
        assert (c.directory != obj.parent) == (attr == "dsl_version")
        assert callable(c.get(KERNEL, ARCH))
        assert (c.stats.compiles, c.stats.disk_loads) == (1, 0)
    assert {k: v for k, v in listing(obj.parent).items() if k in theirs} == theirs  # left alone
    back = ck.KernelCache()
    back.get(KERNEL, ARCH)
    assert (back.stats.disk_loads, back.stats.compiles) == (1, 0)


# -- read-only and full directories --------------------------------------------------------------
def deny_writes(monkeypatch, root, code):
    """Every Python-level write under ``root`` fails with ``code`` (root ignores file modes)."""
    root = str(root)

    def guard(fn, path_of=lambda *a, **k: a[0]):
        def wrapper(*args, **kwargs):
            if str(path_of(*args, **kwargs)).startswith(root):
                raise OSError(code, os.strerror(code), str(path_of(*args, **kwargs)))
            return fn(*args, **kwargs)
        return wrapper

    for name in ("write_bytes", "write_text", "touch", "unlink", "mkdir", "rename", "replace", "symlink_to"):
        monkeypatch.setattr(pathlib.Path, name, guard(getattr(pathlib.Path, name)))
    for name in ("replace", "rename", "remove", "unlink", "mkdir"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, flags, *a, **k: (
        guard(real_open)(path, flags, *a, **k) if flags & writing else real_open(path, flags, *a, **k)))


def test_read_only_directory_runs_from_memory_with_one_warning(installed, monkeypatch):
    obj, _ = installed
    before = listing(obj.parent)
    with monkeypatch.context() as m:
        deny_writes(m, obj.parent.parent, errno.EROFS)
        c = ck.KernelCache()
        with pytest.warns(RuntimeWarning) as record:
            assert callable(c.get(KERNEL, ARCH))
            assert callable(c.get(OTHER, ARCH))
    messages = [str(w.message) for w in record if "cute-kernels" in str(w.message)]
    assert len(messages) == 1 and "not writable" in messages[0], messages
    assert c.stats.compiles + c.stats.disk_loads == 2 and c.stats.corrupt_entries == 0
    assert listing(obj.parent) == before  # nothing written, nothing removed


def _full_object(obj, meta):
    return obj.with_name(f"{obj.name}.tmp{os.getpid()}")


def _full_sidecar(obj, meta):
    return meta.with_suffix(f".json.tmp{os.getpid()}")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) to fail writes with ENOSPC")
@pytest.mark.parametrize("full", [_full_object, _full_sidecar], ids=["object", "sidecar"])
def test_full_disk_keeps_the_kernel_in_memory(cache_dir, full):
    """Writes to /dev/full fail with ENOSPC: the object (written by the DSL) or its sidecar."""
    obj, meta = entry()
    obj.parent.mkdir(parents=True)
    tmp = full(obj, meta)
    tmp.symlink_to("/dev/full")
    c = ck.KernelCache()
    with pytest.warns(RuntimeWarning, match="No space left on device"):
        assert callable(c.get(KERNEL, ARCH))
    assert c.stats.compiles == 1
    assert not obj.exists() and not meta.exists()
    assert {p.name for p in obj.parent.iterdir()} <= {tmp.name, meta.with_suffix(".lock").name}
    tmp.unlink(missing_ok=True)  # space again: the next process writes the entry
    assert_rebuilt_and_valid()


def test_lock_that_cannot_be_taken_compiles_in_memory(cache_dir, monkeypatch):
    """The directory turned read-only after the probe: the lock file cannot be created."""
    c = ck.KernelCache()
    assert c._disk_usable()
    with monkeypatch.context() as m:
        deny_writes(m, cache_dir, errno.EROFS)
        with pytest.warns(RuntimeWarning, match="cache write failed"):
            assert callable(c.get(KERNEL, ARCH))
    assert c.stats.compiles == 1 and not entry()[0].exists()


# -- writers killed mid-write --------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import os, pathlib, sys, time
    from cute_kernels import compile as ck
    from cute_kernels.kernels.pack_topk import PackTopk

    stage, go = sys.argv[1], pathlib.Path(sys.argv[2])

    def pause():  # tell the parent, then wait for it to create `go` (or to kill this process)
        print("paused", flush=True)
        while not go.exists():
            time.sleep(0.01)

    if stage == "object half-written":
        compile_kernel = ck.compile_kernel

        class HalfWritten:
            def __init__(self, fn):
                self.fn = fn

            def export_to_c(self, path, function_name):
                self.fn.export_to_c(path, function_name=function_name)
                data = pathlib.Path(path).read_bytes()
                pathlib.Path(path).write_bytes(data[:len(data) // 2])
                pause()

        ck.compile_kernel = lambda kernel, arch: HalfWritten(compile_kernel(kernel, arch))
    elif stage == "object renamed, sidecar not":
        replace = os.replace

        def replace_then_pause(src, dst):
            replace(src, dst)
            if str(dst).endswith((".o", ".so")):
                pause()

        os.replace = replace_then_pause
    elif stage == "sidecar half-written":
        write_text = pathlib.Path.write_text

        def half(self, data, *args, **kwargs):
            write_text(self, data[:len(data) // 2], *args, **kwargs)
            pause()

        pathlib.Path.write_text = half
    ck.KernelCache().get(PackTopk("int32", "float32", 8, 8, True), "sm_90a")
""")


def start_writer(stage, tmp_path):
    """A process compiling KERNEL into the cache, stopped at ``stage`` (it holds the key's lock)."""
    go = tmp_path / "go"
    with open(tmp_path / "writer.err", "w") as err:
        p = subprocess.Popen([sys.executable, "-c", WRITER, stage, str(go)], stdout=subprocess.PIPE, stderr=err,
                             text=True)
    line = p.stdout.readline().strip()
    assert line == "paused", (tmp_path / "writer.err").read_text()[-3000:]
    return p, go


STAGES = ["object half-written", "object renamed, sidecar not", "sidecar half-written"]


@pytest.mark.parametrize("stage", STAGES)
def test_writer_killed_mid_write(cache_dir, tmp_path, stage):
    p, _ = start_writer(stage, tmp_path)
    p.kill()  # SIGKILL: no cleanup runs, and the kernel releases its lock
    p.wait(timeout=60)
    obj, meta = entry()
    c = assert_rebuilt_and_valid()  # compiles: nothing the killed process left is loaded
    assert c.stats.corrupt_entries == (1 if stage == "object renamed, sidecar not" else 0)
    assert json.loads(meta.read_text())["sha256"] == hashlib.sha256(obj.read_bytes()).hexdigest()
    assert not [f.name for f in obj.parent.iterdir() if ".tmp" in f.name]  # its temporaries are gone


def test_only_dead_writers_temporaries_of_the_key_are_removed(cache_dir):
    """Compiling a key removes the temporaries its dead writers left, not a live process's, nor
    another key's (whose lock it does not hold)."""
    obj, meta = entry()
    obj.parent.mkdir(parents=True)
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()
    dead = [obj.with_name(f"{obj.name}.tmp{finished.pid}"), meta.with_name(f"{meta.name}.tmp{finished.pid}")]
    kept = [obj.with_name(f"{obj.name}.tmp{os.getppid()}"),  # a live process
            entry(OTHER)[0].with_name(f"{entry(OTHER)[0].name}.tmp{finished.pid}")]  # another key
    for f in dead + kept:
        f.write_bytes(b"half of a file")
    c = ck.KernelCache()
    assert callable(c.get(KERNEL, ARCH)) and c.stats.compiles == 1
    assert not any(f.exists() for f in dead) and all(f.exists() for f in kept)


class _SignalWhenWaiting(filelock.FileLock):
    """Creates ``go`` just before waiting for a key's lock (so a paused writer may finish)."""

    go = None

    def acquire(self, *args, **kwargs):
        self.go.touch()
        return super().acquire(*args, **kwargs)


def test_reader_never_deletes_an_entry_being_written(cache_dir, tmp_path, monkeypatch):
    p, go = start_writer("object renamed, sidecar not", tmp_path)
    try:
        monkeypatch.setattr(_SignalWhenWaiting, "go", go)
        monkeypatch.setattr(ck.filelock, "FileLock", _SignalWhenWaiting)
        c = ck.KernelCache()
        assert callable(c.get(KERNEL, ARCH))
    finally:
        go.touch()
        assert p.wait(timeout=120) == 0
    assert (c.stats.compiles, c.stats.disk_loads) == (0, 1), c.stats  # the writer's entry, loaded
