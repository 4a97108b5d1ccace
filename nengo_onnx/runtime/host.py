"""The parts of a simulation that run in Python, with Nengo's own step functions.

`TimeFeeder` computes the values of `.FeedInput` operators (input Nodes and
time-only processes) for a block of steps; `HostOp` runs one operator that has
no ONNX form on the simulator's state, once per minibatch item.
"""

import numpy as np
from nengo.builder.signal import SignalDict
from nengo.exceptions import SimulationError

from nengo_onnx.compiler.signals import dense, view_indices


def sim_time(step, dt, dtype=np.float64):
    """``step * dt`` rounded to ``dtype``, as a Python float.

    Time-only inputs are computed at nengo's exact (float64) time. Python functions
    of the network's signals get the time rounded to the simulation dtype, like the
    signals they read: ``Node(lambda t: t)`` fed into such a function then gives
    exactly its ``t`` (nengo's own test_node.py::test_args checks ``x[0] == t``).
    """
    return float(np.dtype(dtype).type(step * dt))


class TimeFeeder:
    """Values of the fed inputs, step by step, from Nengo's step functions."""

    def __init__(self, feeds, model, dt):
        self.feeds = feeds  # key -> (FeedInput, source op or None, Node or None)
        self.model = model
        self.dt = dt
        self._steps = {}

    def reset(self, rng):
        self.signals = SignalDict()
        self.signals.init(self.model.time)
        self._steps = {}
        for key, (feed, source, _) in self.feeds.items():
            if source is None:
                continue
            for sig in source.all_signals:
                if sig not in self.signals and sig.base not in self.signals:
                    self.signals.init(sig.base)
            self._steps[key] = (source.make_step(self.signals, self.dt, rng), source, feed)

    def values(self, key, start, n_steps):
        """``[n_steps, *shape]`` values of feed ``key`` for steps ``start+1 ... start+n``."""
        feed, source, node = self.feeds[key]
        if source is None:  # a constant Node output
            value = np.asarray(node.output, dtype=np.float64).reshape(feed.dst.shape)
            return np.broadcast_to(value, (n_steps, *feed.dst.shape))
        step, source, feed = self._steps[key]
        out = self.signals[source.output]
        values = np.empty((n_steps, *out.shape))
        time = self.signals[self.model.time]
        for i in range(n_steps):
            time[...] = sim_time(start + i + 1, self.dt)
            if feed.mode == "inc":
                out[...] = 0
            step()
            values[i] = out
        return values

    def all_values(self, keys, start, n_steps):
        """Values for several feeds, computed step by step in schedule order.

        Stateful feeds are advanced together so that each sees the same time.
        """
        return {key: self.values(key, start, n_steps) for key in keys}


class HostOp:
    """One operator run in Python on the simulator's state, per minibatch item.

    Each item gets its own ``SignalDict`` (in the signals' own dtypes, as Nengo's
    step functions expect) that persists across steps, since step functions close
    over their arrays and may keep state of their own.
    """

    def __init__(self, op, program, minibatch_size, rng):
        self.op = op
        self.plan = program.signals
        self.params = program.params
        self.time_base = program.model.time.base
        self.dtype = program.dtype
        dt = self.dt = program.dt
        bases = []
        for sig in op.all_signals:
            if sig.base not in bases:
                bases.append(sig.base)
        self.bases = bases
        self.written = {s.base for s in op.sets + op.incs + op.updates}
        self.items = []
        for _ in range(minibatch_size):
            sd = SignalDict()
            for base in bases:
                sd.init(base)
                if base.readonly:
                    # a private copy, so trained values can be written in later
                    dict.__setitem__(sd, base, np.array(dict.__getitem__(sd, base)))
            try:
                step = op.make_step(sd, dt, rng)
            except Exception as err:
                raise SimulationError(f"Cannot run {op} in Python: {err}") from err
            self.items.append((sd, step))
        self.load_values()

    def load_values(self):
        """Copy trained or loaded parameter values into the Python-side signals."""
        for sd, _ in self.items:
            for base in self.bases:
                if base in self.params:
                    dict.__getitem__(sd, base)[...] = self.params.value(base)
        return self

    def __call__(self, store, step_number):
        for b, (sd, step) in enumerate(self.items):
            for base in self.bases:
                if base is self.time_base:
                    # in the simulation dtype, as the signals it reads (see `sim_time`)
                    dict.__getitem__(sd, base)[...] = sim_time(step_number, self.dt, self.dtype)
                elif base in store:
                    value = store[base][b] if self.plan.batched(base) else store[base]
                    dict.__getitem__(sd, base)[...] = value
            step()
            for base in self.written:
                value = dict.__getitem__(sd, base)
                if self.plan.batched(base):
                    store[base][b] = value
                else:
                    store[base][...] = value


def read_signal(store, signals, sig, minibatch_size, initial=None):
    """``sig``'s value from a store of base arrays, ``[B, *sig.shape]``.

    Bases not in the store (constants) take ``initial(base)``, by default their
    initial value.
    """
    base = sig.base
    if base in store:
        value = store[base]
        if not signals.batched(base):
            value = np.broadcast_to(value, (minibatch_size, *base.shape))
    else:
        value = dense(base.initial_value) if initial is None else initial(base)
        value = np.broadcast_to(value, (minibatch_size, *base.shape))
    if sig is base:
        return np.array(value)
    flat = value.reshape(minibatch_size, -1)
    return flat[:, view_indices(sig)]
