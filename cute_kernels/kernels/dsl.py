"""The CuTe DSL names the kernel modules use, or inert stand-ins where it is not installed.

A deployment that runs ahead-of-time compiled kernels has no DSL, yet it imports the kernel
classes: their dataclass fields are the compile keys. Without the DSL every name used at import
time (decorators, annotations, module constants) resolves to a placeholder, and nothing here
can compile; ``cute_kernels.compile`` says so before it would try.
"""

try:
    import cutlass
    import cutlass.cute as cute
    from cutlass._mlir.dialects import llvm
    from cutlass.cute.nvgpu import cpasync
    from cutlass.cutlass_dsl import T, dsl_user_op
except ImportError:

    class _Absent:
        """Attributes, subscripts and calls give placeholders; decorating gives the function back."""

        def __init__(self, name: str):
            self._name = name

        def __getattr__(self, attr):
            return _Absent(f"{self._name}.{attr}")

        def __getitem__(self, item):
            return self

        def __call__(self, *args, **kwargs):
            if len(args) == 1 and not kwargs and callable(args[0]):
                return args[0]
            return self

        def __repr__(self):
            return f"<{self._name}: the CuTe DSL (nvidia-cutlass-dsl) is not installed>"

    cutlass = _Absent("cutlass")
    cute, cpasync = cutlass.cute, cutlass.cute.nvgpu.cpasync
    llvm, T, dsl_user_op = cutlass._mlir.dialects.llvm, cutlass.cutlass_dsl.T, cutlass.cutlass_dsl.dsl_user_op
