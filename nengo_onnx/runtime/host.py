"""The parts of a simulation that run in Python, with Nengo's own step functions.

`TimeFeeder` computes the values of `.FeedInput` operators (input Nodes and
time-only processes) for a block of steps; `HostOp` runs one operator that has
no ONNX form on the simulator's state, once per minibatch item.
"""

import numpy as np
from nengo.builder.signal import SignalDict
from nengo.exceptions import SimulationError

from nengo_onnx.compiler.signals import dense, view_indices


def sim_time(step, dt):
    """``step * dt`` in float64, as a Python float: the ``t`` nengo.Simulator gives
    Python functions (time-only inputs and functions of signals alike)."""
    return float(np.float64(step) * np.float64(dt))


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

    def __call__(self, store, step_number, exact):
        """Run one step for every minibatch item.

        ``exact`` holds the float64 values (``[B, ...]``) of the bases that Python
        computed this step: they are read in preference to ``store``'s (which the
        ONNX segments see, in the simulation dtype), and the operator's results
        go into both.
        """
        for b, (sd, step) in enumerate(self.items):
            for base in self.bases:
                if base is self.time_base:
                    dict.__getitem__(sd, base)[...] = sim_time(step_number, self.dt)
                elif base in exact:
                    dict.__getitem__(sd, base)[...] = exact[base][b]
                elif base in store:
                    value = store[base][b] if self.plan.batched(base) else store[base]
                    dict.__getitem__(sd, base)[...] = value
            step()
            for base in self.written:
                value = dict.__getitem__(sd, base)
                write_item(exact, store, self.plan, base, b, value)


def write_item(exact, store, plan, base, item, value):
    """Write minibatch item ``item``'s ``value`` of ``base`` into ``exact`` (float64)
    and ``store`` (the simulation's arrays)."""
    if base not in exact:  # the other items keep their current values
        current = store[base] if plan.batched(base) else store[base][None]
        exact[base] = np.array(current, dtype=np.float64)
    exact[base][item if plan.batched(base) else 0] = value
    if plan.batched(base):
        store[base][item] = value
    else:
        store[base][...] = value


class HostFeed:
    """A `FeedInput` run in Python: it writes its fed value (float64) each step.

    Used where the fed value only travels to Python operators (see
    `nengo_onnx.passes.split_host`), so they get it unrounded.
    """

    def __init__(self, feed, program):
        self.feed = feed
        self.plan = program.signals
        self.base = feed.dst.base
        self.index = view_indices(feed.dst).ravel()

    def __call__(self, store, values, exact):
        """``values``: ``[B, *dst.shape]`` float64, this step's fed value."""
        plan, base = self.plan, self.base
        for b in range(len(values)):
            current = (
                exact[base][b]
                if base in exact
                else (store[base][b] if plan.batched(base) else store[base])
            )
            flat = np.array(current, dtype=np.float64).reshape(-1)
            new = np.asarray(values[b], dtype=np.float64).reshape(-1)
            flat[self.index] = flat[self.index] + new if self.feed.mode == "inc" else new
            write_item(exact, store, plan, base, b, flat.reshape(base.shape))


def read_signal(store, signals, sig, minibatch_size, initial=None, index=None):
    """``sig``'s value from a store of base arrays, ``[B, *sig.shape]``.

    Bases not in the store (constants) take ``initial(base)``, by default their
    initial value. ``index``: ``view_indices(sig)``, if the caller keeps it.
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
    return flat[:, view_indices(sig) if index is None else index]
