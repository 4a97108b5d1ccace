"""The emitter registry: operator type -> ``(fn(op, ctx), supports(op))``.

Kept apart from the package's ``__init__`` (which imports every emitter module
to fill it), so the emitter modules import this module, never their package.
"""

import warnings

from nengo.exceptions import BuildError

EMITTERS = {}


def emitter(*op_types, supports=None):
    """Register ``fn(op, ctx)`` as the emitter for ``op_types``."""

    def register(fn):
        for op_type in op_types:
            if op_type in EMITTERS:
                warnings.warn(
                    f"Type '{op_type.__name__}' already has an emitter. Overwriting.", stacklevel=2
                )
            EMITTERS[op_type] = (fn, supports)
        return fn

    return register


def find_emitter(op):
    """The emitter for ``op``, or ``None`` with the reason it has none."""
    for cls in type(op).__mro__:
        if cls in EMITTERS:
            fn, supports = EMITTERS[cls]
            reason = supports(op) if supports is not None else None
            return (None, reason) if reason else (fn, None)
    return None, f"no ONNX emitter for {type(op).__name__}"


def emit(op, ctx):
    fn, reason = find_emitter(op)
    if fn is None:
        raise BuildError(f"Cannot emit {op}: {reason}")
    ctx.op = op
    ctx.graph.doc = str(op)
    fn(op, ctx)
    ctx.graph.doc = None
