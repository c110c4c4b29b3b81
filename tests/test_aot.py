"""Ahead-of-time directories: build, verify, skip what is up to date, load without the CuTe DSL."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cute_kernels import aot, keys, runtime_shim
from cute_kernels import compile as ck

ROOT = Path(__file__).resolve().parents[1]
NO_DSL = Path(__file__).with_name("no_dsl")  # its sitecustomize makes the DSL absent
PRESET, OP, ARCHS = "gpt-oss-120b", "PackTopk", ("sm_90a", "sm_100a")  # 4 top-k kernels per arch


def run(args, no_dsl=False):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(([str(NO_DSL)] if no_dsl else []) + [str(ROOT)]))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def cli(*args):
    return run(["-m", "cute_kernels.cli", "aot", *args])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("aot")
    arch_args = [a for arch in ARCHS for a in ("--arch", arch)]
    result = cli(*arch_args, "--preset", PRESET, "--op", OP, "--out", str(out), "--jobs", "2")
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.fixture
def copy(built, tmp_path):
    """A private copy of the built directory, free to damage."""
    return Path(shutil.copytree(built[0], tmp_path / "aot"))


def entries(directory):
    return json.loads((directory / aot.MANIFEST).read_text())["entries"]


def test_build_writes_libraries_and_manifest(built):
    out, result = built
    found = entries(out)
    assert len(found) == 8 and sorted(e["arch"] for e in found.values()) == sorted(ARCHS * 4)
    assert all(key.startswith("pack_topk.PackTopk[") and key.endswith("@" + e["arch"]) for key, e in found.items())
    for e in found.values():
        lib = out / e["file"]
        assert lib.stat().st_size == e["size"] and e["fingerprint"] == keys.family_fingerprint("pack_topk")
        assert all(runtime_shim.allowed_undefined(s) for s in runtime_shim.undefined_symbols(lib))
        assert all(runtime_shim.ALLOWED_NEEDED.match(n) for n in runtime_shim.needed_libraries(lib))
    assert sorted(p.name for p in out.iterdir()) == sorted([aot.MANIFEST] + [e["file"] for e in found.values()])
    assert "8/8" in result.stderr and "8 kernels: 8 built, 0 up to date, 0 failed" in result.stdout


def test_rerun_skips_everything(built):
    out, _ = built
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.so")}
    result = cli("--arch", "sm_90a", "--arch", "sm_100a", "--preset", PRESET, "--op", OP, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "8 kernels: 0 built, 8 up to date" in result.stdout
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.so")}


def test_verify_passes_on_a_fresh_build(built):
    result = cli("--verify", str(built[0]))
    assert result.returncode == 0, result.stderr
    assert "ok, 8 kernels" in result.stdout


def test_verify_names_every_mismatch(copy):
    libs = sorted(copy.glob("*.so"))
    data = bytearray(libs[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    libs[0].write_bytes(bytes(data))
    libs[1].unlink()
    (copy / "stray.so").write_bytes(b"")
    manifest = json.loads((copy / aot.MANIFEST).read_text())
    stale = next(e for e in manifest["entries"].values() if e["file"] == libs[2].name)
    stale["fingerprint"] = "0" * 16
    (copy / aot.MANIFEST).write_text(json.dumps(manifest))
    result = cli("--verify", str(copy))
    assert result.returncode == 1
    assert f"sha256 mismatch: {libs[0].name}" in result.stderr
    assert f"missing file: {libs[1].name}" in result.stderr
    assert "unlisted file: stray.so" in result.stderr
    assert f"stale fingerprint: {libs[2].name}" in result.stderr
    assert "4 problem(s)" in result.stderr


def test_verify_without_manifest_fails(tmp_path):
    result = cli("--verify", str(tmp_path))
    assert result.returncode == 1 and "manifest.json: missing or unreadable" in result.stderr


def test_rerun_rebuilds_only_the_damaged_library(copy):
    lib = sorted(copy.glob("*.so"))[0]
    lib.write_bytes(lib.read_bytes()[:1000])
    result = cli("--arch", "sm_90a", "--arch", "sm_100a", "--preset", PRESET, "--op", OP, "--out", str(copy))
    assert result.returncode == 0, result.stderr
    assert "8 kernels: 1 built, 7 up to date" in result.stdout
    assert cli("--verify", str(copy)).returncode == 0


def test_unknown_op_is_refused(tmp_path):
    result = cli("--arch", "sm_90a", "--preset", PRESET, "--op", "nope", "--out", str(tmp_path))
    assert result.returncode == 2 and "--op nope matches no kernel" in result.stderr and "PackTopk" in result.stderr


LOAD_WITHOUT_DSL = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch, tvm_ffi
    try:
        import cutlass
        sys.exit("cutlass imported")
    except ImportError:
        pass
    out = Path(sys.argv[1])
    for key, entry in json.loads((out / "manifest.json").read_text())["entries"].items():
        fn = tvm_ffi.load_module(str(out / entry["file"])).cute_kernel
        k = 4
        ids, w, packed = torch.zeros(2, k, dtype=torch.int32), torch.zeros(2, k), torch.zeros(2, k, dtype=torch.int32)
        try:  # the generated argument checks run without a GPU: CPU tensors are refused
            fn(ids, w, packed)
            sys.exit(f"{key}: accepted CPU tensors")
        except ValueError as e:
            assert "device_type=cuda" in str(e), e
    assert sys.modules.get("cutlass") is None and not any(m.startswith("cutlass.") for m in sys.modules)
    print("loaded", len(json.loads((out / "manifest.json").read_text())["entries"]))
""")


def test_libraries_load_with_tvm_ffi_alone(built):
    result = run(["-c", LOAD_WITHOUT_DSL, str(built[0])], no_dsl=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["loaded", "8"]


def preset_topk_kernels():
    from cute_kernels import catalog, presets

    return [k for k in catalog.preset_kernels(presets.get(PRESET)) if type(k).__name__ == OP]


def test_runtime_loads_from_the_aot_dir_first(built, cache_dir, monkeypatch):
    monkeypatch.setattr(ck, "_aot_dir", None)
    monkeypatch.setenv(ck.AOT_ENV, str(built[0]))
    cache = ck.KernelCache()
    for kernel in preset_topk_kernels():
        assert cache.contains(kernel, "sm_100a")
        assert callable(cache.get(kernel, "sm_100a"))
    assert (cache.stats.aot_loads, cache.stats.compiles, cache.stats.disk_loads) == (4, 0, 0)
    assert not cache_dir.exists()  # nothing went through the JIT cache


def test_runtime_skips_stale_and_damaged_artifacts(copy, cache_dir, monkeypatch):
    monkeypatch.setattr(ck, "_aot_dir", None)
    ck.set_aot_dir(copy)
    kernel = preset_topk_kernels()[0]
    lib = copy / entries(copy)[ck.CompileKey.of(kernel, "sm_90a").describe()]["file"]
    lib.write_bytes(lib.read_bytes() + b"\0")
    cache = ck.KernelCache()
    with pytest.warns(RuntimeWarning, match="does not match its sha256"):
        assert callable(cache.get(kernel, "sm_90a"))
    assert (cache.stats.aot_loads, cache.stats.compiles) == (0, 1)
    monkeypatch.setattr(keys, "family_fingerprint", lambda family: "edited-sources")
    (copy / aot.MANIFEST).touch()  # a new manifest stamp: the directory is read again
    cache = ck.KernelCache()
    with pytest.warns(RuntimeWarning, match="other kernel sources"):
        assert callable(cache.get(preset_topk_kernels()[1], "sm_90a"))
    assert (cache.stats.aot_loads, cache.stats.compiles) == (0, 1)


RUN_WITHOUT_DSL = textwrap.dedent("""
    import sys
    import cute_kernels
    from cute_kernels import catalog, compile as ck, presets
    from cute_kernels.kernels import pack_topk
    ck.set_aot_dir(sys.argv[1])
    cache = ck.default_cache()
    for kernel in catalog.preset_kernels(presets.get(sys.argv[2])):
        if type(kernel).__name__ == sys.argv[3]:
            assert callable(cache.get(kernel, "sm_90a"))
    try:
        cache.get(pack_topk.pick("int32", "float32", 3, 16, True), "sm_90a")
        sys.exit("compiled without the DSL?")
    except ck.KernelUnavailableError as e:
        assert "has no entry for it" in str(e) and "not installed" in str(e), e
    assert sys.modules.get("cutlass") is None and not any(m.startswith("cutlass.") for m in sys.modules)
    print("aot", cache.stats.aot_loads, "compiled", cache.stats.compiles)
""")


def test_package_runs_aot_kernels_without_dsl(built):
    result = run(["-c", RUN_WITHOUT_DSL, str(built[0]), PRESET, OP], no_dsl=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["aot", "4", "compiled", "0"]


def test_from_cache_links_what_the_jit_compiled(cache_dir, tmp_path):
    kernel = preset_topk_kernels()[0]
    ck.KernelCache().get(kernel, "sm_90a")  # a run that compiled one kernel into the JIT cache
    out = tmp_path / "aot"
    result = cli("--from-cache", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "1 kernels: 1 built" in result.stdout
    assert list(entries(out)) == [ck.CompileKey.of(kernel, "sm_90a").describe()]
    assert cli("--verify", str(out)).returncode == 0


def test_keys_file_builds_the_keys_that_arch_filters(tmp_path):
    kernel = preset_topk_kernels()[0]
    listed = [ck.CompileKey.of(kernel, arch).describe() for arch in ARCHS]
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# what a GPU run used\n\n" + "\n".join(listed) + "\n")
    out = tmp_path / "aot"
    result = cli("--keys", str(keys_file), "--arch", "sm_100a", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["built"], summary["archs"], summary["failed"]) == (1, ["sm_100a"], [])
    assert list(entries(out)) == [listed[1]]


def test_every_catalog_key_names_its_kernel():
    from cute_kernels import catalog

    for kernel in catalog.all_variants():
        key = ck.CompileKey.of(kernel, "sm_100a").describe()
        assert keys.parse_key(key) == (kernel, "sm_100a")


@pytest.mark.parametrize("key", ["nonsense", "router_gemm.RouterGemm[x_dtype=bfloat16]@sm_90a",
                                 "no_such.Kernel[a=1]@sm_90a", "pack_topk.PackTopk[ids_dtype=int32,weights_dtype="
                                 "float32,k=8,vec=8,pdl=True,threads=64,extra=1]@sm_90a"])
def test_bad_keys_are_refused(key):
    with pytest.raises(ValueError, match="compile key|names no kernel"):
        keys.parse_key(key)
