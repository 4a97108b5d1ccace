"""Quiet, torch-free access to onnxruntime and its training API.

``onnxruntime.training``'s package ``__init__`` imports its torch-based ``optim``
module, so importing it the normal way fails without torch. The training tooling
(``artifacts``, ``onnxblock``) and the on-device API (``api``) need no torch, so we
register an empty package object for ``onnxruntime.training`` and import those
submodules directly.
"""

import importlib.util
import sys
import types

import onnxruntime as ort

# Severity 3 = errors only; onnxruntime logs warnings and info lines otherwise.
LOG_SEVERITY = 3


def session_options(threads=None, log_severity=None, profile_prefix=None):
    """Build ``SessionOptions`` that are quiet unless asked otherwise."""
    so = ort.SessionOptions()
    so.log_severity_level = LOG_SEVERITY if log_severity is None else log_severity
    if threads is not None:
        so.intra_op_num_threads = threads
    # spinning threads hurt badly on shared 2-core machines (see shared docs, 6.2)
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
    from onnxruntime.training import artifacts, onnxblock  # noqa: PLC0415
    from onnxruntime.training import api  # noqa: PLC0415
    from onnxruntime.training.onnxblock import _training_graph_utils  # noqa: PLC0415

    # generate_artifacts builds its own SessionOptions and logs at INFO otherwise
    _training_graph_utils.SessionOptions = lambda: session_options()
    return types.SimpleNamespace(artifacts=artifacts, onnxblock=onnxblock, api=api)
