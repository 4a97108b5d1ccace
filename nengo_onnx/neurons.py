"""Neuron types that NengoDL adds to Nengo's, for nengo-onnx and ``nengo.Simulator``.

`SoftLIFRate` is NengoDL's smoothed LIF rate neuron (Hunsberger & Eliasmith 2015). It
is a plain ``nengo.LIFRate`` subclass with a numpy ``step``, so the same network runs
in ``nengo.Simulator``; nengo-onnx emits it as ONNX (and trains through it) with
``nengo_onnx.compiler.emit.neurons.emit_soft_lif_rate``.
"""

import numpy as np
from nengo.neurons import LIFRate
from nengo.params import NumberParam


class SoftLIFRate(LIFRate):
    """LIF rate neuron whose tuning curve is smoothed around the firing threshold.

    The rate of the current ``J`` is NengoDL's:

    ``amplitude / (tau_ref + tau_rc * log1p(1 / z))``, ``z = sigma * log1p(exp((J - 1) /
    sigma))``,

    where ``(J - 1) / sigma <= -20`` uses the limit ``log1p(1 / z) = -(J - 1) / sigma -
    log(sigma)``. Its derivative is continuous everywhere, so it trains well; as
    ``sigma -> 0`` it becomes ``LIFRate``. Train with it, then run with ``nengo.LIF``.

    Parameters
    ----------
    sigma : float
        Amount of smoothing around the firing threshold (larger: smoother).
    tau_rc, tau_ref, amplitude, initial_state
        As for ``nengo.LIFRate``.
    """

    sigma = NumberParam("sigma", low=0, low_open=True)

    def __init__(self, sigma=1.0, tau_rc=0.02, tau_ref=0.002, amplitude=1, initial_state=None):
        super().__init__(
            tau_rc=tau_rc, tau_ref=tau_ref, amplitude=amplitude, initial_state=initial_state
        )
        self.sigma = sigma

    def rates(self, x, gain, bias):
        """The steady-state rates for inputs ``x`` (this type's own curve, not LIFRate's)."""
        J = self.current(x, gain, bias)
        out = np.zeros_like(J)
        self.step(dt=1, J=J, output=out)
        return out

    def step(self, dt, J, output):
        """Implements the SoftLIF rate of ``J`` (see the class docstring)."""
        x = (J - 1) / self.sigma
        valid = x > -20
        safe = np.where(valid, x, 0.0)
        z = (np.maximum(safe, 0) + np.log1p(np.exp(-np.abs(safe)))) * self.sigma
        q = np.where(valid, np.log1p(1 / z), -x - np.log(self.sigma))
        output[...] = self.amplitude / (self.tau_ref + self.tau_rc * q)


__all__ = ["SoftLIFRate"]
