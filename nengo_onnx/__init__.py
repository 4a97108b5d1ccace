"""nengo-onnx: compile Nengo networks to ONNX; run, train and export them.

The public names are imported on first use: ``nengo-onnx run`` and the exported
models' runner import only onnxruntime and numpy, so importing this package must
not import nengo.
"""

import importlib

from . import _ort  # noqa: F401  (quiets onnxruntime before anything else uses it)

__version__ = "0.1.0"

_PUBLIC = {
    "Simulator": "simulator",
    "configure_settings": "config",
    "export": "exporter",
    "OnnxNode": "onnx_node",
    "objectives": None,  # modules
    "optimizers": None,
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'nengo_onnx' has no attribute '{name}'")
    module = _PUBLIC[name]
    value = (
        importlib.import_module(f".{name}", __name__)
        if module is None
        else getattr(importlib.import_module(f".{module}", __name__), name)
    )
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
