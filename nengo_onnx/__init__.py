"""nengo-onnx: compile Nengo networks to ONNX; run, train and export them.

The public names are imported on first use: ``nengo-onnx run`` and the exported
models' runner import only onnxruntime and numpy, so importing this package must
not import nengo.
"""

import importlib

from nengo_onnx import ort_setup  # noqa: F401  (imported to quiet onnxruntime's logging first)

__version__ = "0.1.0"

#: public name -> the module that defines it (None: the name is a module)
_PUBLIC = {
    "Simulator": "nengo_onnx.simulator",
    "configure_settings": "nengo_onnx.config",
    "export": "nengo_onnx.exporting.exporter",
    "ExportError": "nengo_onnx.exporting.exporter",
    "ParamsMismatchError": "nengo_onnx.compiler.params",
    "OnnxNode": "nengo_onnx.onnx_node",
    "Converter": "nengo_onnx.converter",
    "SoftLIFRate": "nengo_onnx.neurons",
    "objectives": None,
    "optimizers": None,
    "losses": None,
    "metrics": None,
    "callbacks": None,
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'nengo_onnx' has no attribute '{name}'")
    module = _PUBLIC[name]
    value = (
        importlib.import_module(f"nengo_onnx.{name}")
        if module is None
        else getattr(importlib.import_module(module), name)
    )
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
