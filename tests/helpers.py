"""Test-only helpers: gradients from the training graphs, setting parameter values, and
the rate forms of spiking neuron types."""

import inspect

import nengo.neurons as nn
import numpy as np

from nengo_onnx.compiler import trainable
from nengo_onnx.compiler.params import param_groups
from nengo_onnx.training.graph import compile_window
from nengo_onnx.training.train import (
    Parameters,
    _check_count,
    _check_trainable_network,
    _initial_state,
    _train_minibatch,
    _windows,
    training_feeder,
    validate_data,
)


def gradient_sums(sim, data, objective=None, truncation=None):
    """``{ParamGroup: gradient}`` of the objective on ``data``, summed over its
    minibatches, from the training graphs as `train` runs them (no parameter changes)."""
    truncation = _check_count("truncation", truncation, allow_none=True)
    data = validate_data(sim, data, objective)
    _check_trainable_network(sim)
    groups = param_groups(sim.program, trainable.trainable_params(sim.program))
    names = tuple(grp.name for grp in groups)
    windows = _windows(data.n_steps, truncation)
    compiled = {
        n: compile_window(sim.program, n, data.terms, names, keep_state=len(windows) > 1)
        for n in sorted({n for _, n in windows})
    }
    first = compiled[windows[0][1]]
    parameters = Parameters(first, groups)
    parameters.load(sim.program)
    feeder = training_feeder(sim, data, np.random.RandomState(sim.seed))
    grads = {
        grp.name: np.zeros(param.data.shape, dtype=np.float32) for grp, param in parameters.views
    }
    total = {grp.name: np.zeros(grp.base.shape) for grp in groups}
    batch = sim.program.minibatch_size
    initial = _initial_state(sim, first)
    for b in range(data.n_inputs // batch):
        idx = np.arange(b * batch, (b + 1) * batch)
        _train_minibatch(feeder, data, compiled, windows, idx, initial, parameters, grads)
        for name, grad in grads.items():
            total[name] += grad
    return {grp: total[grp.name] for grp in groups}


def gradients(sim, data, objective=None, truncation=None):
    """``{Param: gradient}`` of the objective on ``data`` w.r.t. the trainable parameters.

    Summed (not averaged) over minibatches, shaped like each parameter (``sim.data``
    values); zero where a parameter does not reach the loss. Nothing changes.
    """
    by_base = {
        grp.base: grad
        for grp, grad in gradient_sums(
            sim, data, objective=objective, truncation=truncation
        ).items()
    }
    return {
        p: trainable.read(by_base[p.signal(sim.model).base], p.signal(sim.model))
        for p in trainable.trainable_params(sim.program)
    }


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


# -- the rate form of a spiking type: what training's emitters must match --------


def _make(cls, initial_state=None, **params):
    """``cls(**params)``, also when some parameters are per-neuron arrays.

    Nengo's parameters only take scalars (and hash them), so a subclass answers
    the names of the array parameters with the arrays.
    """
    params["initial_state"] = initial_state
    arrays = {
        k: np.asarray(v) for k, v in params.items() if k != "initial_state" and np.ndim(v) > 0
    }
    if not arrays:
        return cls(**params)

    def getattribute(self, name):
        return arrays[name] if name in arrays else cls.__getattribute__(self, name)

    sub = type(f"PerNeuron{cls.__name__}", (cls,), {"__getattribute__": getattribute})
    return sub(**{k: float(np.ravel(v)[0]) if k in arrays else v for k, v in params.items()})


def rate_form(neuron_type):
    """The rate neuron type that stands in for ``neuron_type`` in training.

    Rate types are their own rate form. ``LIF -> LIFRate``, ``AdaptiveLIF ->
    AdaptiveLIFRate``, ``SpikingRectifiedLinear -> RectifiedLinear`` (same
    parameters), ``RegularSpiking(x)``, ``StochasticSpiking(x)``,
    ``PoissonSpiking(x) -> x`` (with its amplitude multiplied by the wrapper's, if
    ``x`` has one). ``None`` for spiking types without a rate form (Izhikevich).
    The LIF rate form in training graphs is SoftLIF when the ``lif_smoothing``
    setting is given; this function still answers ``LIFRate`` then.
    """
    if isinstance(neuron_type, nn.RatesToSpikesNeuronType):
        base = neuron_type.base_type
        if np.any(np.asarray(neuron_type.amplitude) != 1) and hasattr(type(base), "amplitude"):
            params = {k: getattr(base, k) for k in _init_params(base)}
            params["amplitude"] = base.amplitude * neuron_type.amplitude
            return _make(type(base), initial_state=base.initial_state, **params)
        return base
    if isinstance(neuron_type, nn.AdaptiveLIF):
        # the adaptation state carries over, with its initial value
        initial = {k: v for k, v in (neuron_type.initial_state or {}).items() if k == "adaptation"}
        return _make(
            nn.AdaptiveLIFRate,
            tau_n=neuron_type.tau_n,
            inc_n=neuron_type.inc_n,
            tau_rc=neuron_type.tau_rc,
            tau_ref=neuron_type.tau_ref,
            amplitude=neuron_type.amplitude,
            initial_state=initial or None,
        )
    if isinstance(neuron_type, nn.LIF):
        return _make(
            nn.LIFRate,
            tau_rc=neuron_type.tau_rc,
            tau_ref=neuron_type.tau_ref,
            amplitude=neuron_type.amplitude,
        )
    if isinstance(neuron_type, nn.SpikingRectifiedLinear):
        return _make(nn.RectifiedLinear, amplitude=neuron_type.amplitude)
    if getattr(neuron_type, "spiking", False):
        return None
    return neuron_type


def _init_params(neuron_type):
    """The constructor parameters of ``neuron_type`` that are nengo Parameters."""
    names = inspect.signature(type(neuron_type).__init__).parameters
    return [
        k for k in names if k not in ("self", "initial_state") and hasattr(type(neuron_type), k)
    ]
