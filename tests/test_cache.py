"""The JIT cache: memory and disk hits, atomic entries, corruption, races, unwritable dirs."""

import json
import subprocess
import sys
import textwrap

import pytest

from cute_kernels import compile as ck
from cute_kernels.kernels.pack_topk import PackTopk

ARCH = "sm_90a"
KERNEL = PackTopk("int32", "float32", 8, 8, True)


def entry(cache):
    obj, meta = cache.paths(ck.CompileKey.of(KERNEL, ARCH))
    return obj, meta


def test_miss_then_memory_then_disk(cache_dir):
    c = ck.KernelCache()
    fn = c.get(KERNEL, ARCH)
    assert (c.stats.compiles, c.stats.disk_loads) == (1, 0)
    assert c.get(KERNEL, ARCH) is fn and c.stats.memory_hits == 1
    obj, meta = entry(c)
    assert obj.exists() and json.loads(meta.read_text())["key"] == ck.CompileKey.of(KERNEL, ARCH).describe()
    fresh = ck.KernelCache()  # a new process sees the disk entry
    assert callable(fresh.get(KERNEL, ARCH))
    assert (fresh.stats.compiles, fresh.stats.disk_loads) == (0, 1)
    assert fresh.contains(KERNEL, ARCH) and not fresh.contains(PackTopk("int64", "float32", 8, 8, True), ARCH)


def test_key_covers_config_arch_version_and_sources(monkeypatch):
    from cute_kernels import keys

    base = ck.CompileKey.of(KERNEL, ARCH)
    assert base != ck.CompileKey.of(PackTopk("int32", "float32", 8, 8, False), ARCH)
    assert base.digest() != ck.CompileKey.of(KERNEL, "sm_100a").digest()
    digest = base.digest()
    monkeypatch.setattr(keys, "family_fingerprint", lambda family: "edited-sources")
    assert base.digest() != digest
    monkeypatch.setattr(keys, "dsl_version", lambda: "0.0.0")
    assert ck.KernelCache().directory.name == f"{ck.CACHE_LAYOUT}-dsl-0.0.0"


def _damage_truncate(obj, meta):
    obj.write_bytes(obj.read_bytes()[: obj.stat().st_size // 2])


def _damage_garbage(obj, meta):
    obj.write_bytes(b"\x7fELF" + b"\x00" * 64)


def _damage_foreign_meta(obj, meta):  # a valid entry of another key renamed onto this one
    info = json.loads(meta.read_text())
    meta.write_text(json.dumps({**info, "key": "pack_topk.PackTopk[other]@sm_90a"}))


def _damage_killed_mid_write(obj, meta):  # object renamed in, sidecar never written
    meta.unlink()


def _damage_bad_json(obj, meta):
    meta.write_text("{not json")


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_garbage, _damage_foreign_meta,
                                    _damage_killed_mid_write, _damage_bad_json])
def test_damaged_entry_is_rebuilt(cache_dir, damage):
    ck.KernelCache().get(KERNEL, ARCH)
    obj, meta = entry(ck.KernelCache())
    damage(obj, meta)
    c = ck.KernelCache()
    assert callable(c.get(KERNEL, ARCH))
    assert (c.stats.corrupt_entries, c.stats.compiles) == (1, 1)
    again = ck.KernelCache()
    again.get(KERNEL, ARCH)
    assert (again.stats.disk_loads, again.stats.compiles) == (1, 0)


def test_unwritable_directory_degrades_to_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(ck.CACHE_ENV, str(blocker / "cache"))  # cannot mkdir under a file
    c = ck.KernelCache()
    with pytest.warns(RuntimeWarning, match="memory only"):
        fn = c.get(KERNEL, ARCH)
    assert callable(fn) and c.stats.compiles == 1
    assert c.get(KERNEL, ARCH) is fn


RACER = textwrap.dedent("""
    import json
    from cute_kernels.compile import CompileKey, KernelCache
    from cute_kernels.kernels.pack_topk import PackTopk
    c = KernelCache()
    kernel = PackTopk("int32", "float32", 8, 8, True)
    fn = c.get(kernel, "sm_90a")
    sha = json.loads(c.paths(CompileKey.of(kernel, "sm_90a"))[1].read_text())["sha256"]
    print(c.stats.compiles, c.stats.disk_loads, callable(fn), sha)
""")


def test_racing_processes_compile_once(cache_dir):
    procs = [subprocess.Popen([sys.executable, "-c", RACER], stdout=subprocess.PIPE, text=True)
             for _ in range(8)]
    results = [p.communicate(timeout=600)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(int(r[0]) for r in results) == 1
    assert sum(int(r[1]) for r in results) == 7
    assert all(r[2] == "True" for r in results)
    obj, meta = entry(ck.KernelCache())
    assert {r[3] for r in results} == {json.loads(meta.read_text())["sha256"]}  # one entry, used by all
    fresh = ck.KernelCache()
    assert callable(fresh.get(KERNEL, ARCH)) and (fresh.stats.disk_loads, fresh.stats.compiles) == (1, 0)
