"""Quiet, torch-free access to onnxruntime and its training API.

``onnxruntime.training``'s package ``__init__`` imports its torch-based ``optim``
module, so importing it the normal way fails without torch. The training tooling
(``artifacts``, ``onnxblock``) and the on-device API (``api``) need no torch, so we
register an empty package object for ``onnxruntime.training`` and import those
submodules directly.
"""

import importlib.util
import os
import sys
import types


def _training_stub():
    """Register ``onnxruntime.training`` as an empty package, without importing onnxruntime.

    ``import onnxruntime`` checks for ORTModule by importing
    ``onnxruntime.training.ortmodule``, which first runs the training package's
    ``__init__`` (about 0.25 s: the artifact tooling, then a failing torch import).
    With the empty package registered first, that check only tries (and fails)
    to import torch.
    """
    if "onnxruntime.training" in sys.modules or "onnxruntime" in sys.modules:
        return
    spec = importlib.util.find_spec("onnxruntime")  # finds it; does not import it
    if spec is None or not spec.submodule_search_locations:
        return
    path = os.path.join(list(spec.submodule_search_locations)[0], "training")
    init = os.path.join(path, "__init__.py")
    if not os.path.exists(init):
        return
    pkg = types.ModuleType("onnxruntime.training")
    pkg.__path__ = [path]
    pkg.__spec__ = importlib.util.spec_from_file_location(
        "onnxruntime.training", init, submodule_search_locations=[path]
    )
    sys.modules["onnxruntime.training"] = pkg


_training_stub()

import onnxruntime as ort  # noqa: E402

# Severity 3 = errors only; onnxruntime logs warnings and info lines otherwise.
LOG_SEVERITY = 3


def session_options(threads=None, log_severity=None, profile_prefix=None):
    """Build ``SessionOptions`` that are quiet unless asked otherwise."""
    so = ort.SessionOptions()
    so.log_severity_level = LOG_SEVERITY if log_severity is None else log_severity
    if threads is not None:
        so.intra_op_num_threads = threads
    # Works around onnxruntime's spinning intra-op threads, which busy-wait between ops: on a
    # loaded 2-core machine two spinning threads ran a train step slower than one thread
    # (18.7 ms against 11.9 ms), while two non-spinning threads stayed within 10 % of it.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.inter_op_num_threads = 1
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_prefix)
    return so


def inference_session(model_bytes, **kwargs):
    """An ``InferenceSession`` on the CPU for serialized model bytes."""
    return ort.InferenceSession(
        model_bytes, sess_options=session_options(**kwargs), providers=["CPUExecutionProvider"]
    )


def import_training():
    """Import ``onnxruntime.training``'s torch-free submodules.

    Returns a namespace with ``artifacts``, ``onnxblock`` and the ``api`` classes.
    """
    if "onnxruntime.training" not in sys.modules:
        spec = importlib.util.find_spec("onnxruntime.training")
        pkg = types.ModuleType("onnxruntime.training")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["onnxruntime.training"] = pkg
    from onnxruntime.training import (  # noqa: PLC0415
        api,  # noqa: PLC0415
        artifacts,
        onnxblock,
    )
    from onnxruntime.training.onnxblock import _training_graph_utils  # noqa: PLC0415

    # generate_artifacts builds its own SessionOptions and logs at INFO otherwise
    _training_graph_utils.SessionOptions = lambda: session_options()
    return types.SimpleNamespace(artifacts=artifacts, onnxblock=onnxblock, api=api)


#: Gradients registered with onnxruntime-training in this process:
#: ``{"<domain>::<op_type>": definition}`` (see `register_gradient`).
REGISTERED_GRADIENTS = {}


def register_gradient(key, nodes):
    """Register the gradient of op ``key`` (``"<domain>::<op_type>"``), once per process.

    ``nodes`` are ``(op_type, inputs, outputs, attrs)`` in onnxruntime's notation:
    inputs may be ``I(i)``, ``O(i)``, ``GO(i)`` or earlier outputs, outputs
    ``GI(i)`` or new names; ``attrs`` maps a name to ``(value, dtype, is_tensor)``
    (dtype ``"int"``, ``"float"``, ``"bool"`` or ``"string"``; tensors are scalars).
    Registrations are process-global and must precede ``generate_artifacts``;
    a definition only mentions the op's inputs by position, so the same key always
    gets the same definition.
    """
    if key in REGISTERED_GRADIENTS:
        return
    import json  # noqa: PLC0415

    from onnxruntime.capi import _pybind_state as C  # noqa: PLC0415

    definition = []
    for op_type, inputs, outputs, attrs in nodes:
        node = C.GradientNodeDefinition()
        node.op_type, node.domain, node.inputs, node.outputs = op_type, "", inputs, outputs
        attributes = []
        for name, (value, dtype, is_tensor) in attrs.items():
            attr = C.GradientNodeAttributeDefinition()
            attr.name, attr.value_json = name, json.dumps(value)
            attr.dtype, attr.is_tensor = dtype, is_tensor
            attributes.append(attr)
        node.attributes = attributes
        definition.append(node)
    C.register_gradient_definition(key, definition)
    REGISTERED_GRADIENTS[key] = tuple(nodes)
