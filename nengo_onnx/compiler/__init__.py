"""The compiler: a model built by nengo's Builder in, a `Program` out.

`compile_model` builds the operator graph (`graph`), names everything once
(`names`), runs the passes listed in `pipeline`, plans the signals (`signals`)
and keeps the parameter values (`params`); the `Program` then emits ONNX blocks
(`block`, with one emitter per operator type in `emit`) and owns their
onnxruntime sessions.
"""

import importlib

__all__ = ["Program", "compile_model"]


def __getattr__(name):
    # on first use: the compiler's own modules import this package's core modules,
    # which must not have to load the whole pipeline first
    if name in __all__:
        return getattr(importlib.import_module("nengo_onnx.compiler.program"), name)
    raise AttributeError(f"module 'nengo_onnx.compiler' has no attribute '{name}'")
