"""Operator emitters: one small function per Nengo operator type, in a registry.

An emitter is ``fn(op, ctx)``: it reads the operator's signals from the
`.EmitContext` and writes its results back, adding ONNX nodes on the way. Lookup
walks the operator type's MRO, as Nengo's ``Builder`` does, so a subclass falls
back to its parent's emitter. An emitter may come with a ``supports(op)`` check
(returning a reason string when it cannot emit ``op``); such operators then run
in Python instead.
"""

import warnings

EMITTERS = {}


def emitter(*op_types, supports=None):
    """Register ``fn(op, ctx)`` as the emitter for ``op_types``."""

    def register(fn):
        for op_type in op_types:
            if op_type in EMITTERS:
                warnings.warn(f"Type '{op_type.__name__}' already has an emitter. Overwriting.")
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
        from nengo.exceptions import BuildError  # noqa: PLC0415

        raise BuildError(f"Cannot emit {op}: {reason}")
    ctx.op = op
    ctx.graph.doc = str(op)
    fn(op, ctx)
    ctx.graph.doc = None


def _load_emitters():
    # importing the modules registers their emitters
    from nengo_onnx.compiler.emit import (  # noqa: F401, PLC0415
        basic,
        groups,
        learning_rules,
        neurons,
        onnx_node,
        processes,
        transforms,
    )


_load_emitters()
