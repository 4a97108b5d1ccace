"""Settings: ``configure_settings`` checks at the call, `settings_of` when a Simulator
reads the network; every bad value is a ``ValidationError`` naming the setting."""

import dataclasses

import nengo
import numpy as np
import pytest
from nengo.exceptions import ValidationError

import nengo_onnx
from nengo_onnx.config import Settings, settings_of

#: (setting, bad value): each must raise, naming the setting
BAD = [
    ("lif_smoothing", 0),
    ("lif_smoothing", -0.1),
    ("lif_smoothing", "0.05"),
    ("lif_smoothing", float("nan")),
    ("lif_smoothing", float("inf")),
    ("lif_smoothing", True),
    ("spiking_gradient", "bogus"),
    ("spiking_gradient", 1),
    ("dtype", "float16"),
    ("dtype", np.float16),
    ("dtype", 32),
    ("inference_only", 1),
    ("inference_only", "yes"),
]


def small_net():
    with nengo.Network(seed=0) as net:
        a = nengo.Ensemble(5, 1)
        nengo.Probe(a)
    return net


def check_names(excinfo, key):
    assert excinfo.value.attr == key
    assert key in str(excinfo.value)


@pytest.mark.parametrize("key, value", BAD)
def test_configure_settings_raises_at_the_call(key, value):
    with nengo.Network():
        with pytest.raises(ValidationError) as excinfo:
            nengo_onnx.configure_settings(**{key: value})
    check_names(excinfo, key)


@pytest.mark.parametrize("key, value", BAD)
def test_simulator_raises_at_construction(key, value):
    """A value put on the config by hand (not through configure_settings) is caught
    when the Simulator is built."""
    net = small_net()
    with net:
        nengo_onnx.configure_settings(dtype="float32")
    net.config[nengo.Network].nengo_onnx[key] = value
    with pytest.raises(ValidationError) as excinfo:
        settings_of(net)
    check_names(excinfo, key)
    with pytest.raises(ValidationError) as excinfo:
        nengo_onnx.Simulator(net, progress_bar=False)
    check_names(excinfo, key)


def test_unknown_setting():
    with nengo.Network():
        with pytest.raises(ValidationError, match="not a nengo-onnx setting") as excinfo:
            nengo_onnx.configure_settings(lif_smothing=0.1)
    check_names(excinfo, "lif_smothing")


def test_defaults():
    assert settings_of(None) == Settings()
    assert settings_of(small_net()) == Settings(
        dtype="float32", lif_smoothing=None, spiking_gradient=None, inference_only=False
    )


@pytest.mark.parametrize("dtype", ["float64", np.float64, np.dtype("float64")])
def test_dtype_normalised(dtype):
    with nengo.Network() as net:
        nengo_onnx.configure_settings(dtype=dtype)
    assert settings_of(net).dtype == "float64"


def test_values_kept():
    with nengo.Network() as net:
        nengo_onnx.configure_settings(
            lif_smoothing=np.float32(0.5), spiking_gradient="surrogate", inference_only=True
        )
    settings = settings_of(net)
    assert settings == Settings("float32", 0.5, "surrogate", True)
    assert type(settings.lif_smoothing) is float
    # an integer smoothing is a number too
    with nengo.Network() as net:
        nengo_onnx.configure_settings(lif_smoothing=1)
    assert settings_of(net).lif_smoothing == 1.0


def test_settings_frozen_and_checked():
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.dtype = "float64"
    with pytest.raises(ValidationError) as excinfo:
        Settings(lif_smoothing=0)
    check_names(excinfo, "lif_smoothing")


def test_emit_context_takes_settings_only():
    from nengo_onnx.compiler.emit.context import EmitContext  # noqa: PLC0415

    assert EmitContext(None, None, "float32", 1, 0.001).settings == Settings()
    with pytest.raises(TypeError, match="Settings"):
        EmitContext(None, None, "float32", 1, 0.001, settings={"lif_smoothing": 0.1})
