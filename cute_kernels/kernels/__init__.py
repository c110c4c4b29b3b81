"""CuTe DSL kernel definitions. These modules import the DSL through ``.dsl`` (so they import,
as plain dataclasses, where it is not installed) and never ``torch``.

Each kernel is a frozen dataclass holding its static configuration (dtype names, tile sizes,
flags). ``fake_args()`` returns the compile-time arguments (fake tensors with symbolic sizes and
a fake environment stream); ``__call__`` is the ``@cute.jit`` host launch and ``kernel`` the
``@cute.kernel`` device body. The compile layer (``cute_kernels.compile``) keys a compiled
function on the dataclass fields, so every field must be a plain picklable scalar.
"""
