"""What the config probes here share: compile a list of kernel configs ahead of time on every
core of the GPU host, then load them from there (so timing never waits on a JIT compile)."""
import pathlib, sys, tempfile, time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
from cute_kernels import aot, compile as ck  # noqa: E402


def compile_all(kernels, arch: str = "sm_90a", workers: int = 16) -> None:
    """Build each distinct config of ``kernels`` for ``arch`` into a fresh directory and make it
    the ahead-of-time directory the ops load from; prints the count, time and failures."""
    kernels = list(dict.fromkeys(kernels))
    t0 = time.time()
    lib = pathlib.Path(tempfile.mkdtemp())
    jobs = [aot.Job(ck.CompileKey.of(k, arch).describe(), arch, kernel=k) for k in kernels]
    summary = aot.build(jobs, lib, workers=workers)
    print(f"compiled {len(kernels)} configs in {time.time() - t0:.0f} s; failed {summary.failed}", flush=True)
    ck.set_aot_dir(lib)
