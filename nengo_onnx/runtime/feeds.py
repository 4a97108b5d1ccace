"""The values of a compiled block's per-step inputs: the one place inputs are fed.

A block's per-step inputs (``Block.step_inputs``) are of three kinds, told
apart by their port names (`nengo_onnx.compiler.names`):

1. ``input.<node>``: an input Node's output; the user's ``data`` where given,
   else the Node's own output (computed as nengo computes it);
2. ``feed.<signal>``: operators that depend only on time (``Node(np.sin)``,
   neuron noise), computed in Python with nengo's own step functions;
3. ``rand.<signal>``: uniform ``[0, 1)`` random numbers for stochastic neurons.

The random streams are set up here only, from the simulation seed, so that
``run``, ``loss``, training and the inputs written for an exported model see
the same values.
"""

import numpy as np

from nengo_onnx.compiler.names import port_kind
from nengo_onnx.runtime.host import TimeFeeder


class InputFeeder:
    """Feeds a program's blocks: ``feeder(block.step_inputs, start, n_steps)``.

    Parameters
    ----------
    program : `nengo_onnx.compiler.program.Program`
    seed : int
        The simulation's seed. Its stream (``rng``) seeds nengo's step functions
        of the time-only operators, then the ``rand.*`` inputs' stream, then the
        Python operators' step functions (the runtime's, in that order).
    noise_rng : numpy RandomState, optional
        Draws the ``rand.*`` inputs instead (training: its own stream).
    """

    def __init__(self, program, seed, noise_rng=None):
        self.program = program
        self.rng = np.random.RandomState(seed)
        self.time_values = TimeFeeder(program.feeds, program.model, program.dt)
        self.time_values.reset(self.rng)
        if noise_rng is None:
            noise_rng = np.random.RandomState(self.rng.randint(2**31 - 1))
        self.noise_rng = noise_rng
        self._precomputed = {}

    def precompute(self, n_steps, skip=()):
        """Compute the time-only values of steps ``1 ... n_steps`` once, for repeated
        windows that restart from step 0 (training); ``skip``: ports given as data."""
        keys = [k for k in self.program.feeds if k not in skip]
        self._precomputed = self.time_values.all_values(keys, 0, n_steps)

    def exact_values(self, key, step, data=None, data_start=0):
        """``[B, *shape]`` float64 value of feed ``key`` at step ``step + 1`` (for a
        feed run in Python, `nengo_onnx.runtime.host.HostFeed`)."""
        batch = self.program.minibatch_size
        if data and key in data:
            return np.asarray(data[key][:, step - data_start], dtype=np.float64)
        value = self.time_values.all_values([key], step, 1)[key][0]
        return np.broadcast_to(value, (batch, *value.shape))

    def __call__(
        self, step_inputs, start, n_steps, data=None, rows=slice(None), data_start=0, batch=None
    ):
        """``{port: [B, n_steps, *shape]}`` for steps ``start + 1 ... start + n_steps``.

        ``data`` (``{port: [n, total_steps, *shape]}``) overrides input Nodes; its
        step axis starts at step ``data_start``; ``rows`` picks its minibatch rows.
        """
        data = data or {}
        batch = self.program.minibatch_size if batch is None else batch
        computed = {}
        missing = [
            k
            for k in step_inputs
            if k in self.program.feeds and k not in data and k not in self._precomputed
        ]
        if missing:
            computed = self.time_values.all_values(missing, start, n_steps)
        feeds = {}
        for key, (shape, dtype) in step_inputs.items():
            if key in data:
                offset = start - data_start
                value = data[key][rows, offset : offset + n_steps]
            elif key in self._precomputed:
                value = self._precomputed[key][start : start + n_steps]
                value = np.broadcast_to(value[None], (batch, n_steps, *shape))
            elif key in computed:
                value = np.broadcast_to(computed[key][None], (batch, n_steps, *shape))
            elif port_kind(key) == "rand":
                value = self.noise_rng.random_sample((batch, n_steps, *shape))
            else:
                raise KeyError(f"no value for the graph input {key!r}")
            feeds[key] = np.ascontiguousarray(value, dtype=dtype)
        return feeds
