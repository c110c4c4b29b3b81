"""Makes the CuTe DSL absent, as on a deployment that runs only ahead-of-time kernels.

With this directory first on PYTHONPATH, the process (and its children) sees no ``cutlass``
the way a machine without the package sees none: ``importlib.util.find_spec("cutlass")`` returns
None and ``import cutlass`` (or any ``cutlass.*``) raises ModuleNotFoundError. A None entry in
``sys.modules`` is Python's own marker for "this module cannot be imported"; libraries that probe
for the DSL (torch >= 2.14 does at its own import) see it as missing rather than broken.
The whole GPU suite runs DSL-free from artifacts:

    make test-gpu                                   # with the DSL: the JIT cache gets every kernel it uses
    cute-kernels cache --keys > keys.txt            # what it used; then, on any machine:
    cute-kernels aot --keys keys.txt --preset gpt-oss-120b --arch sm_90a --out /tmp/gpu-aot
    PYTHONPATH=tests/no_dsl:$PYTHONPATH CUTE_KERNELS_AOT_DIR=/tmp/gpu-aot python -m pytest -q -m gpu
"""

import sys

sys.modules["cutlass"] = None
