"""``configure_settings``: nengo-onnx options set on a network's config."""

from dataclasses import dataclass

import nengo
from nengo.exceptions import ValidationError
from nengo.params import BoolParam, Parameter

SETTINGS = {
    "dtype": "float32",
    "lif_smoothing": None,
    "spiking_gradient": None,
    "inference_only": False,
}


def configure_settings(**kwargs):
    """Set nengo-onnx options on the network being built (call inside ``with net:``).

    Parameters
    ----------
    dtype : "float32" or "float64"
        Precision of the simulation (training always uses float32).
    lif_smoothing : float
        Smoothing of the LIF rate used for training (SoftLIF's sigma).
    spiking_gradient : None, "rate" or "surrogate"
        How spiking neurons get gradients during training.
    trainable : None or bool
        ``None`` adds the ``trainable`` config option to the network; a bool sets
        it for everything inside the network.
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
        if key not in SETTINGS:
            raise ValidationError(
                f"'{key}' is not a nengo-onnx setting (expected one of "
                f"{sorted(SETTINGS) + ['trainable']})", attr=key
            )
        if key == "dtype" and str(value) not in ("float32", "float64"):
            raise ValidationError(f"dtype must be 'float32' or 'float64', got {value!r}",
                                  attr="dtype")
        _settings(config)[key] = value


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
        raise ValidationError(f"trainable must be None, True or False (got {value!r})",
                              attr="trainable")
    for cls in TRAINABLE_CLASSES:
        if cls not in config.params:
            config.configures(cls)
        params = config.params[cls]
        if "trainable" not in params._extra_params:
            params.set_param("trainable", BoolParam("trainable", None, optional=True))
    if value is not None:
        for cls in TRAINABLE_CLASSES[:3]:
            config.params[cls].trainable = value


def _settings(config):
    if nengo.Network not in config.params:
        config.configures(nengo.Network)
    params = config[nengo.Network]
    if "nengo_onnx" not in params._extra_params:
        params.set_param("nengo_onnx", Parameter("nengo_onnx", None, optional=True))
    if getattr(params, "nengo_onnx", None) is None:
        params.nengo_onnx = {}
    return params.nengo_onnx


def get_setting(network, key, default=None):
    """The value of setting ``key`` on ``network`` (the top-level network)."""
    if network is None:
        return SETTINGS.get(key, default) if default is None else default
    if nengo.Network not in network.config.params:
        return SETTINGS.get(key, default) if default is None else default
    params = network.config[nengo.Network]
    settings = (getattr(params, "nengo_onnx", None)
                if "nengo_onnx" in params._extra_params else None)
    if settings and key in settings:
        return settings[key]
    return SETTINGS.get(key, default) if default is None else default


@dataclass(frozen=True)
class Settings:
    """The validated nengo-onnx settings of a network (see `configure_settings`)."""

    dtype: str = "float32"
    lif_smoothing: object = None
    spiking_gradient: object = None
    inference_only: bool = False

    def get(self, key, default=None):
        return getattr(self, key, default)


def settings_of(network):
    """The `Settings` of ``network`` (defaults where it sets none)."""
    return Settings(**{key: get_setting(network, key) for key in SETTINGS})
