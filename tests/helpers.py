"""Test-only helpers: gradients from the training graphs, and setting parameter values."""

import numpy as np

from nengo_onnx.compiler import trainable
from nengo_onnx.training.train import gradient_sums


def gradients(sim, data, objective=None, truncation=None):
    """``{Param: gradient}`` of the objective on ``data`` w.r.t. the trainable parameters.

    Summed (not averaged) over minibatches, shaped like each parameter (``sim.data``
    values); zero where a parameter does not reach the loss. Nothing changes.
    """
    by_base = {grp.base: grad for grp, grad in
               gradient_sums(sim, data, objective=objective, truncation=truncation).items()}
    return {p: trainable.read(by_base[p.signal(sim.model).base], p.signal(sim.model))
            for p in trainable.trainable_params(sim.program)}


def trainable_params(sim):
    return trainable.trainable_params(sim.program)


def param_value(sim, param):
    """The current value of a `trainable.Param` (a new array)."""
    return sim.program.params.read(param.signal(sim.model))


def set_param_value(sim, param, value):
    """Give a `trainable.Param` a new value (the simulator then runs with it)."""
    sig = param.signal(sim.model)
    base = np.array(sim.program.params.value(sig.base))
    trainable.write(base, sig, np.asarray(value).reshape(sig.shape))
    sim.program.params.set(sig.base, base)


def finite_differences(sim, data, param, objective=None, n=5, eps=1e-5):
    """Central differences of ``sim.loss`` (float64) for the first ``n`` elements of
    ``param`` (the parameter's value is restored afterwards)."""
    value = param_value(sim, param).ravel()
    result = np.zeros(min(n, value.size))
    for i in range(result.size):
        losses = []
        for sign in (1, -1):
            v = value.copy()
            v[i] += sign * eps
            set_param_value(sim, param, v)
            losses.append(sim.loss(data, objective=objective))
        result[i] = (losses[0] - losses[1]) / (2 * eps)
    set_param_value(sim, param, value)
    return result
