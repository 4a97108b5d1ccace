"""nengo-onnx: compile Nengo networks to ONNX; run, train and export them."""

from . import _ort  # noqa: F401  (quiet onnxruntime before anything else uses it)
from . import objectives, optimizers
from .config import configure_settings
from .export import export
from .simulator import Simulator

__version__ = "0.1.0"
__all__ = [
    "Simulator",
    "configure_settings",
    "export",
    "objectives",
    "optimizers",
    "__version__",
]
