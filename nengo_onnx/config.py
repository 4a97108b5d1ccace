"""nengo-onnx's settings: ``configure_settings`` sets them on a network's config,
`settings_of` reads them back as one validated, frozen `Settings`.

1. Every value is checked where it is given (``configure_settings`` raises at the
   call) and again when a Simulator reads the network (`settings_of`), since the
   config can also be edited by hand. A bad value raises ``ValidationError``
   naming the setting; nothing falls back silently.
2. The compiler reads the attributes of one `Settings` object, parsed once.
"""

import dataclasses
import math
import numbers
from typing import Optional

import nengo
import numpy as np
from nengo.exceptions import ValidationError
from nengo.params import BoolParam, Parameter

#: Values of the ``spiking_gradient`` setting.
SPIKING_GRADIENTS = (None, "rate", "surrogate")

#: Values of the ``dtype`` setting.
DTYPES = ("float32", "float64")


def _dtype(value):
    """``"float32"`` or ``"float64"``; numpy's float32/float64 types and dtypes too."""
    if isinstance(value, str):
        name = value
    elif value in (np.float32, np.float64) or isinstance(value, np.dtype):
        name = np.dtype(value).name
    else:
        name = None
    if name not in DTYPES:
        raise ValidationError(f"must be 'float32' or 'float64' (got {value!r})", attr="dtype")
    return name


def _lif_smoothing(value):
    """None, or a positive finite real number (as a float)."""
    if value is None:
        return None
    # bools are Integral, and a string is never parsed: both are mistakes
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not (ok and math.isfinite(value) and value > 0):
        raise ValidationError(
            f"must be None or a positive finite number (got {value!r})", attr="lif_smoothing"
        )
    return float(value)


def _spiking_gradient(value):
    """None, ``"rate"`` or ``"surrogate"``."""
    if not (value is None or isinstance(value, str)) or value not in SPIKING_GRADIENTS:
        raise ValidationError(
            f"must be one of {SPIKING_GRADIENTS} (got {value!r})", attr="spiking_gradient"
        )
    return value


def _inference_only(value):
    """A bool."""
    if not isinstance(value, bool):
        raise ValidationError(f"must be True or False (got {value!r})", attr="inference_only")
    return value


#: setting -> its check, which returns the normalised value or raises
_CHECKS = {
    "dtype": _dtype,
    "lif_smoothing": _lif_smoothing,
    "spiking_gradient": _spiking_gradient,
    "inference_only": _inference_only,
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The nengo-onnx settings of a network, validated (see `configure_settings`).

    Constructing one checks every field (``ValidationError`` naming the field)
    and normalises ``dtype`` to its name and ``lif_smoothing`` to a float.
    """

    dtype: str = "float32"
    lif_smoothing: Optional[float] = None
    spiking_gradient: Optional[str] = None
    inference_only: bool = False

    def __post_init__(self):
        for field in dataclasses.fields(self):
            # frozen: normalised values go in through object.__setattr__
            object.__setattr__(self, field.name, _CHECKS[field.name](getattr(self, field.name)))


def _check_name(key):
    if key not in _CHECKS:
        raise ValidationError(
            f"'{key}' is not a nengo-onnx setting (expected one of "
            f"{sorted(_CHECKS) + ['trainable']})",
            attr=key,
        )


def settings_of(network):
    """The validated `Settings` of ``network`` (defaults for ``None`` or none set).

    Only the top-level network's settings count, as for every Nengo backend option.
    """
    stored = _stored(network.config) if network is not None else None
    for key in stored or {}:
        _check_name(key)
    return Settings(**(stored or {}))


def configure_settings(**kwargs):
    """Set nengo-onnx options on the network being built (call inside ``with net:``).

    Parameters
    ----------
    dtype : "float32" or "float64" (or ``np.float32``, ``np.float64``)
        Precision of the simulation (training always uses float32).
    lif_smoothing : None or a positive finite float
        Smoothing of the LIF rate used for training (SoftLIF's sigma).
    spiking_gradient : None, "rate" or "surrogate"
        How spiking neurons get gradients during training.
    trainable : None or bool
        ``None`` adds the ``trainable`` config option to the network; a bool sets
        it for everything inside the network.
    inference_only : bool
        Accepted for NengoDL scripts; no effect.

    Raises ``ValidationError`` (naming the setting) for an unknown setting or a
    bad value; `settings_of` reads the settings back.
    """
    if not nengo.Network.context:
        raise ValidationError(
            "configure_settings must be called within a Network context", attr="context"
        )
    config = nengo.Network.context[-1].config
    for key, value in kwargs.items():
        if key == "trainable":
            _configure_trainable(config, value)
            continue
        _check_name(key)
        # checked here, so that a bad value raises at the call
        _settings(config)[key] = _CHECKS[key](value)


#: The classes that the ``trainable`` config option applies to.
TRAINABLE_CLASSES = (nengo.Ensemble, nengo.Connection, nengo.ensemble.Neurons, nengo.Network)


def _configure_trainable(config, value):
    """Add the ``trainable`` option to ``config`` (and set it on its classes if a bool).

    ``configure_settings(trainable=None)`` only adds the option, so that
    ``net.config[obj].trainable`` can be set per object, per class and per
    subnetwork; ``trainable=True/False`` also makes it the default for every
    Ensemble, Connection and Neurons inside this network (see
    `nengo_onnx.compiler.trainable` for which setting wins).
    """
    if value is not None and not isinstance(value, bool):
        raise ValidationError(
            f"trainable must be None, True or False (got {value!r})", attr="trainable"
        )
    for cls in TRAINABLE_CLASSES:
        if cls not in config.params:
            config.configures(cls)
        params = config.params[cls]
        if "trainable" not in params.extra_params:
            params.set_param("trainable", BoolParam("trainable", None, optional=True))
    if value is not None:
        for cls in TRAINABLE_CLASSES[:3]:
            config.params[cls].trainable = value


def _stored(config):
    """The settings dict stored on ``config``, or ``None`` if none was set."""
    if nengo.Network not in config.params:
        return None
    params = config[nengo.Network]
    if "nengo_onnx" not in params.extra_params:
        return None
    return getattr(params, "nengo_onnx", None)


def _settings(config):
    """The settings dict stored on ``config``, added (empty) if missing."""
    if nengo.Network not in config.params:
        config.configures(nengo.Network)
    params = config[nengo.Network]
    if "nengo_onnx" not in params.extra_params:
        params.set_param("nengo_onnx", Parameter("nengo_onnx", None, optional=True))
    if getattr(params, "nengo_onnx", None) is None:
        params.nengo_onnx = {}
    return params.nengo_onnx
