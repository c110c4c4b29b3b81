"""Links kernel objects exported through TVM-FFI into shared libraries that need no CuTe DSL.

An exported object calls the DSL's CUDA-dialect runtime, the CUDA runtime and TVM-FFI. The first
two are linked in statically: the DSL's ``libcuda_dialect_runtime_static.a`` and CUDA's
``libcudart_static.a`` of the CUDA major version the DSL was built for (their structs must
agree), plus ``raise_cuda_error.c``, the one function the object needs that the DSL ships only in
its shared runtime. Only ``__tvm_ffi_*`` symbols are exported, so the static CUDA runtime never
interposes on the process's own. At run time a library needs libc, the CUDA driver (which the
static CUDA runtime opens itself) and TVM-FFI's symbols, which ``tvm_ffi`` loads globally.

Building needs the DSL, a C compiler (``$CC`` or ``cc``), binutils (``nm``, ``readelf``) and a
static CUDA runtime: ``pip install "cute-kernels[aot]"`` or ``$CUTE_KERNELS_CUDART_STATIC``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
from pathlib import Path

CUDART_ENV = "CUTE_KERNELS_CUDART_STATIC"
SHIM_SOURCE = Path(__file__).with_name("raise_cuda_error.c")
EXPORTS = "{ global: __tvm_ffi_*; local: *; };\n"
ALLOWED_NEEDED = re.compile(r"^(libc|libdl|libpthread|librt|libm)\.so\.\d+$|^ld-linux")


class ToolchainError(RuntimeError):
    """Something a build needs is not installed (the DSL's runtime, a C compiler, a CUDA runtime)."""


@dataclasses.dataclass(frozen=True)
class Toolchain:
    cc: str
    dialect_runtime: Path  # the DSL's libcuda_dialect_runtime_static.a
    cudart_static: Path
    cudart_origin: str  # where the static CUDA runtime came from, for the manifest
    shim_object: Path
    exports: Path  # linker version script
    recipe: str  # hash of everything besides the object that shapes a library

    def describe(self) -> dict:
        return {"cc": self.cc, "dialect_runtime": str(self.dialect_runtime),
                "cudart_static": str(self.cudart_static), "cudart_origin": self.cudart_origin}


def prepare(workdir: Path) -> Toolchain:
    """Finds the static runtimes and the compiler and builds the shim into ``workdir``."""
    from cutlass.base_dsl.version_info import CUDA_VERSION
    from cutlass.cute.export.aot_config import get_libdir
    import tvm_ffi.libinfo

    dialect = Path(get_libdir()) / "libcuda_dialect_runtime_static.a"
    if not dialect.is_file():
        raise ToolchainError(f"the CuTe DSL's static runtime is missing: {dialect}")
    cudart, origin = find_cudart_static(CUDA_VERSION.major)
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        raise ToolchainError("no C compiler: install one (e.g. gcc) or set $CC")
    workdir.mkdir(parents=True, exist_ok=True)
    shim = workdir / "raise_cuda_error.o"
    includes = [f"-I{p}" for p in tvm_ffi.libinfo.include_paths()]
    _run([cc, "-O2", "-fPIC", "-c", str(SHIM_SOURCE), *includes, "-o", str(shim)])
    exports = workdir / "exports.map"
    exports.write_text(EXPORTS)
    h = hashlib.sha256()
    for part in (Path(__file__).read_bytes(), SHIM_SOURCE.read_bytes(), origin.encode()):
        h.update(part)
    return Toolchain(cc, dialect, cudart, origin, shim, exports, h.hexdigest()[:16])


def find_cudart_static(major: int) -> tuple[Path, str]:
    """``libcudart_static.a`` of CUDA ``major``: $CUTE_KERNELS_CUDART_STATIC, then the pip
    runtime wheel, then a CUDA toolkit ($CUDA_HOME, /usr/local/cuda)."""
    explicit = os.environ.get(CUDART_ENV)
    if explicit:
        if not Path(explicit).is_file():
            raise ToolchainError(f"${CUDART_ENV}={explicit} is not a file")
        return Path(explicit), f"${CUDART_ENV}"
    for dist in (f"nvidia-cuda-runtime-cu{major}", "nvidia-cuda-runtime"):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        if version.split(".")[0] != str(major):
            continue
        for f in importlib.metadata.files(dist) or ():
            if f.name == "libcudart_static.a":
                return Path(f.locate()).resolve(), f"{dist} {version}"
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        for lib in (Path(root, "lib64"), Path(root, "lib")) if root else ():
            # The toolkit's major version shows in its shared runtime's soname.
            if (lib / "libcudart_static.a").is_file() and (lib / f"libcudart.so.{major}").exists():
                return (lib / "libcudart_static.a").resolve(), f"CUDA toolkit {root}"
    raise ToolchainError(
        f"no static CUDA {major} runtime (libcudart_static.a) found: pip install "
        f"'cute-kernels[aot]' (nvidia-cuda-runtime-cu{major}), or set ${CUDART_ENV}"
    )


def link(obj: Path, out: Path, tc: Toolchain) -> None:
    """Links ``obj`` into the shared library ``out`` and checks what it still needs."""
    _run([tc.cc, "-shared", "-o", str(out), str(obj), str(tc.shim_object), str(tc.dialect_runtime),
          str(tc.cudart_static), f"-Wl,--version-script={tc.exports}", "-Wl,--gc-sections", "-s",
          "-lpthread", "-ldl", "-lrt"])
    unexpected = sorted(s for s in undefined_symbols(out) if not allowed_undefined(s))
    unexpected += sorted(n for n in needed_libraries(out) if not ALLOWED_NEEDED.match(n))
    if unexpected:
        raise RuntimeError(f"{out.name} would need more than libc, the CUDA driver and TVM-FFI: "
                           + ", ".join(unexpected))


def allowed_undefined(symbol: str) -> bool:
    return symbol.startswith("TVMFFI") or "@GLIBC_" in symbol


def undefined_symbols(path: Path) -> list[str]:
    """Undefined, non-weak dynamic symbols (with their version, e.g. ``malloc@GLIBC_2.2.5``)."""
    out = _run(["nm", "-D", "--undefined-only", str(path)])
    return [fields[1] for fields in map(str.split, out.splitlines()) if fields[:1] == ["U"]]


def needed_libraries(path: Path) -> list[str]:
    out = _run(["readelf", "-d", str(path)])
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def _run(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise ToolchainError(f"{cmd[0]} not found (AOT builds need a C compiler and binutils)") from e
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")
    return done.stdout
