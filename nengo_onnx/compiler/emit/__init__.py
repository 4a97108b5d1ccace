"""Operator emitters: one small function per Nengo operator type, in a registry.

An emitter is ``fn(op, ctx)``: it reads the operator's signals from the
`.EmitContext` and writes its results back, adding ONNX nodes on the way. Lookup
walks the operator type's MRO, as Nengo's ``Builder`` does, so a subclass falls
back to its parent's emitter. An emitter may come with a ``supports(op)`` check
(returning a reason string when it cannot emit ``op``); such operators then run
in Python instead.
"""

from nengo_onnx.compiler.emit.registry import EMITTERS, emit, emitter, find_emitter

__all__ = ["EMITTERS", "emit", "emitter", "find_emitter"]


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
