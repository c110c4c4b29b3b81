"""What names a compiled kernel: compile keys, per-family source fingerprints, the targets.

A kernel is a configuration (a frozen dataclass of a family in ``cute_kernels.kernels``). Its
``CompileKey`` is that configuration plus the target arch; its digest also covers the DSL
version, the compile options, and the fingerprint of the sources that family is built from (its
package and the shared kernel modules it imports), so editing one family recompiles only its
kernels, and a stale artifact is never loaded.

A leaf module: the standard library only (no torch, no DSL), so every layer can use it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import pkgutil
import re
from pathlib import Path

KERNELS_DIR = Path(__file__).resolve().parent / "kernels"
KERNELS_PACKAGE = f"{__package__}.kernels"
SUPPORTED_ARCHS = ("sm_90a", "sm_100a")  # Hopper and Blackwell, the arch-specific targets
COMPILE_OPTIONS = "--enable-tvm-ffi --gpu-arch {arch}"  # part of every digest: another recipe, other code
FUNCTION_NAME = "cute_kernel"  # the symbol every exported object carries


def check_arch(arch: str) -> str:
    """``arch`` if this suite compiles for it, else ValueError naming the supported targets."""
    if arch not in SUPPORTED_ARCHS:
        hint = f" (the arch-specific target is {arch}a)" if f"{arch}a" in SUPPORTED_ARCHS else ""
        raise ValueError(f"unsupported arch {arch!r}{hint}; this suite compiles for {', '.join(SUPPORTED_ARCHS)}")
    return arch


def unsupported_arch(arch: str) -> str | None:
    """Why the kernels cannot run on a GPU of ``arch`` (e.g. "sm_80", "sm_120a"); None when they can."""
    if arch in SUPPORTED_ARCHS:
        return None
    if int(re.sub(r"\D", "", arch)) < 90:
        return "the CuTe kernels need sm_90 or newer"
    return f"the CuTe kernels are built for {' and '.join(SUPPORTED_ARCHS)} only"


def arch_of_capability(major: int, minor: int) -> str:
    """A GPU's target: the arch-specific variant from Hopper on (wgmma, setmaxnreg and TMA
    multicast need it), e.g. "sm_90a"; the plain one before, e.g. "sm_80"."""
    return f"sm_{major}{minor}a" if major >= 9 else f"sm_{major}{minor}"


@functools.lru_cache(maxsize=None)
def dsl_available() -> bool:
    """Whether the CuTe DSL can be imported (and so compile); checked without importing it."""
    try:
        return importlib.util.find_spec("cutlass") is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
def dsl_version() -> str | None:
    """The installed nvidia-cutlass-dsl release, from its metadata (the DSL is not imported);
    None without it."""
    if not dsl_available():
        return None
    try:
        return importlib.metadata.version("nvidia-cutlass-dsl")
    except importlib.metadata.PackageNotFoundError:  # on the path without metadata
        import cutlass

        return cutlass.__version__


def families() -> list[str]:
    """The kernel families: the packages under ``cute_kernels/kernels``."""
    return sorted(m.name for m in pkgutil.iter_modules([str(KERNELS_DIR)]) if m.ispkg)


def family_of(config) -> str:
    """The family a configuration belongs to: the package after ``kernels.`` in its module."""
    module = type(config).__module__
    prefix = KERNELS_PACKAGE + "."
    if not module.startswith(prefix):
        raise TypeError(f"{type(config).__qualname__} is not a kernel configuration of {KERNELS_PACKAGE}")
    return module[len(prefix):].split(".")[0]


def _imported_kernel_modules(path: Path) -> set[str]:
    """The modules of ``cute_kernels/kernels`` that ``path`` imports (relative or absolute)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join([KERNELS_PACKAGE] + list(path.relative_to(KERNELS_DIR).parent.parts))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else (
                node.module or "")
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith(KERNELS_PACKAGE + ".")}


def _module_file(name: str) -> Path | None:
    parts = name[len(KERNELS_PACKAGE) + 1:].split(".")
    for candidate in (KERNELS_DIR.joinpath(*parts).with_suffix(".py"), KERNELS_DIR.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def family_sources(family: str) -> tuple[Path, ...]:
    """Every source file a family is built from: its package, and the kernel modules outside it
    that those files import, transitively."""
    if family not in families():
        raise ValueError(f"no kernel family {family!r}; families: {', '.join(families())}")
    todo = sorted((KERNELS_DIR / family).rglob("*.py"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [f for f in map(_module_file, _imported_kernel_modules(path)) if f is not None and f not in seen]
    return tuple(sorted(seen))


@functools.lru_cache(maxsize=None)
def family_fingerprint(family: str) -> str:
    """Hash of a family's sources (``family_sources``) and the DSL and TVM-FFI versions."""
    h = hashlib.sha256()
    for path in family_sources(family):
        h.update(str(path.relative_to(KERNELS_DIR)).encode())
        h.update(path.read_bytes())
    h.update(f"dsl={dsl_version()}".encode())
    try:
        h.update(f"tvm_ffi={importlib.metadata.version('apache-tvm-ffi')}".encode())
    except importlib.metadata.PackageNotFoundError:
        pass
    return h.hexdigest()[:16]


def key_fingerprint(text: str) -> str:
    """The installed sources' fingerprint of the family a key description names."""
    return family_fingerprint(text.split(".", 1)[0])


@dataclasses.dataclass(frozen=True)
class CompileKey:
    kernel: str  # "<family>.<configuration class>", e.g. "pack_topk.PackTopk"
    config: tuple  # ((field, value), ...) of the configuration
    arch: str  # "sm_90a", "sm_100a"

    @classmethod
    def of(cls, config, arch: str) -> "CompileKey":
        fields = tuple((f.name, getattr(config, f.name)) for f in dataclasses.fields(config))
        return cls(f"{family_of(config)}.{type(config).__qualname__}", fields, arch)

    @property
    def family(self) -> str:
        return self.kernel.split(".")[0]

    def fingerprint(self) -> str:
        return family_fingerprint(self.family)

    def digest(self) -> str:
        text = repr((self.kernel, self.config, self.arch, dsl_version(), COMPILE_OPTIONS, self.fingerprint()))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def describe(self) -> str:
        cfg = ",".join(f"{k}={v}" for k, v in self.config)
        return f"{self.kernel}[{cfg}]@{self.arch}"


def parse_key(text: str):
    """``(configuration, arch)`` that a compile-key description names (as manifests and
    ``cute-kernels cache --keys`` list them: ``family.Class[field=value,...]@arch``).
    ValueError if it names no configuration of these sources."""
    match = re.fullmatch(r"(\w+)\.(\w+)\[(.*)\]@(\w+)", text.strip())
    if not match:
        raise ValueError(f"not a compile key: {text!r}")
    family, class_name, fields, arch = match.groups()
    try:
        cls = getattr(importlib.import_module(f"{KERNELS_PACKAGE}.{family}"), class_name)
        values = dict(item.split("=", 1) for item in fields.split(",")) if fields else {}
        config = cls(**{name: _field_value(value) for name, value in values.items()})
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{text.strip()}: names no kernel of these sources ({e})") from None
    if CompileKey.of(config, arch).describe() != text.strip():
        raise ValueError(f"{text.strip()}: does not round-trip (fields differ from these sources)")
    return config, arch


def _field_value(text: str):
    """Configuration fields are str, int, bool or None; ``describe`` wrote them with str()."""
    if text in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[text]
    return int(text) if re.fullmatch(r"-?\d+", text) else text
