"""Makes the CuTe DSL unimportable, as on a deployment that runs only ahead-of-time kernels.

With this directory first on PYTHONPATH, ``import cutlass`` (and any ``cutlass.*``) raises
ImportError in that process and its children. The whole GPU suite runs DSL-free from artifacts:

    make test-gpu                                   # with the DSL: the JIT cache gets every kernel it uses
    cute-kernels cache --keys > keys.txt            # what it used; then, on any machine:
    cute-kernels aot --keys keys.txt --preset gpt-oss-120b --arch sm_90a --out /tmp/gpu-aot
    PYTHONPATH=tests/no_dsl:$PYTHONPATH CUTE_KERNELS_AOT_DIR=/tmp/gpu-aot python -m pytest -q -m gpu
"""

import sys


class _BlockDSL:
    def find_spec(self, name, path=None, target=None):
        if name == "cutlass" or name.startswith("cutlass."):
            raise ImportError(f"{name} is blocked: this process runs without the CuTe DSL")
        return None


sys.meta_path.insert(0, _BlockDSL())
