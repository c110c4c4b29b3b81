"""The package's structure: layers that import downwards only, no import circle, kernels that
import no DSL until they compile, and per-family source fingerprints."""

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first. A module may import its own layer's modules (without a circle) and lower ones.
LAYERS = [
    ("cute_kernels.checks",),
    ("cute_kernels.reference", "cute_kernels.presets", "cute_kernels.routing"),
    ("cute_kernels.kernels",),
    ("cute_kernels.keys", "cute_kernels.aot_dir", "cute_kernels.runtime_shim"),
    ("cute_kernels.compile",),
    ("cute_kernels.bridge",),
    ("cute_kernels.ops", "cute_kernels.catalog", "cute_kernels.timing", "cute_kernels"),
    ("cute_kernels.aot",),
    ("dispatch",),
    ("cute_kernels.cli",),
]


def layer(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} belongs to no layer"
    return best[0]


def modules():
    for package in ("cute_kernels", "dispatch"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def imports(name: str, path: Path) -> set[str]:
    """Every project module ``path`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ("." * node.level + (node.module or "")) if node.level else node.module
            if node.level:
                import importlib.util
                base = importlib.util.resolve_name(base, package)
            candidates = [f"{base}.{a.name}" for a in node.names] + [base]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        for c in candidates:
            if c.split(".")[0] in ("cute_kernels", "dispatch"):
                found.add(c)
    return found


def resolve(target: str, known: set[str]) -> str | None:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def graph():
    mods = dict(modules())
    known = set(mods)
    return {name: {r for t in imports(name, path) if (r := resolve(t, known)) and r != name}
            for name, path in mods.items()}


def test_every_module_imports_downwards_only():
    bad = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
           for m, targets in graph().items() for t in targets
           if layer(t) > layer(m) and not m.startswith(t + ".")]  # a package's own __init__ is above it
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    g = graph()
    # A package importing its own submodules is how packages export; drop those edges.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in g.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in edges.get(m, ()):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


IMPORTS_NO_DSL = textwrap.dedent("""
    import sys
    import cute_kernels, dispatch
    from cute_kernels import aot, catalog, cli, compile, timing
    catalog.all_variants()  # every configuration is built
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("cutlass", "tvm_ffi")
                    or m.endswith(".kernel") and m.startswith("cute_kernels.kernels."))
    print(loaded)
""")


def test_importing_the_package_imports_no_compiler():
    """A process that runs ahead-of-time or cached kernels must not pay for the DSL's import."""
    result = subprocess.run([sys.executable, "-c", IMPORTS_NO_DSL], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


FINGERPRINTS = textwrap.dedent("""
    import json
    from cute_kernels import keys
    print(json.dumps({f: keys.family_fingerprint(f) for f in keys.families()}))
""")


def _fingerprints(root: Path) -> dict:
    import json

    result = subprocess.run([sys.executable, "-c", FINGERPRINTS], capture_output=True, text=True, timeout=300,
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("edited,moves", [
    ("kernels/pack_topk/kernel.py", {"pack_topk"}),
    ("kernels/router_gemm/reduction.py", {"router_gemm"}),
    ("kernels/ptx.py", {"router_gemm"}),  # a shared helper: the families that import it
    ("kernels/dsl.py", {"pack_topk", "router_gemm", "silu_mul_quant_fp8"}),
])
def test_editing_a_kernel_moves_only_its_fingerprint(tmp_path, edited, moves):
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "cute_kernels", copy / "cute_kernels", ignore=shutil.ignore_patterns("__pycache__"))
    before = _fingerprints(copy)
    with open(copy / "cute_kernels" / edited, "a") as f:
        f.write("\n# edited\n")
    after = _fingerprints(copy)
    assert {f for f in before if before[f] != after[f]} == moves


EDITED_CACHE = textwrap.dedent("""
    import sys
    from cute_kernels.compile import KernelCache
    from cute_kernels.kernels import pack_topk, silu_mul_quant_fp8
    cache = KernelCache()
    pack = pack_topk.pick("int32", "float32", 8, 16, True)
    silu = silu_mul_quant_fp8.pick("bfloat16", 2048, 128, False, False, "row", True)
    if sys.argv[1] == "fill":
        cache.get(pack, "sm_90a"), cache.get(silu, "sm_90a")
    print(cache.contains(pack, "sm_90a"), cache.contains(silu, "sm_90a"))
""")


def test_an_edited_kernel_recompiles_alone(tmp_path, cache_dir):
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "cute_kernels", copy / "cute_kernels", ignore=shutil.ignore_patterns("__pycache__"))

    def run(stage):
        result = subprocess.run([sys.executable, "-c", EDITED_CACHE, stage], capture_output=True, text=True,
                                timeout=600, cwd=copy, env={**os.environ, "PYTHONPATH": str(copy)})
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.split()

    assert run("fill") == ["True", "True"]
    with open(copy / "cute_kernels" / "kernels" / "pack_topk" / "kernel.py", "a") as f:
        f.write("\n# edited\n")
    assert run("look") == ["False", "True"]  # the packing kernel misses; SiLU's entry still hits
