"""Run a compiled `Program` with onnxruntime, carrying the simulation state.

Two modes:

* **unrolled** (every operator has an ONNX form): one model runs ``K`` steps per
  call; the remainder of a run that is not a multiple of ``K`` uses a one-step
  model.
* **segmented** (some operators run in Python): every step runs the ONNX segments
  and the Python operators in schedule order on a store of numpy arrays.

The `Runtime` owns the state (one array per state base, ``[B, ...]`` where
minibatched) and the step count; the program owns what is compiled.
"""

import numpy as np

from nengo_onnx.compiler.operators import FeedInput
from nengo_onnx.compiler.signals import view_indices
from nengo_onnx.runtime.feeds import InputFeeder
from nengo_onnx.runtime.host import HostFeed, HostOp, read_signal


class Runtime:
    """The simulation state of one `Program`, and running it forward."""

    def __init__(self, program):
        self.program = program
        self.B = program.minibatch_size
        self.dtype = program.dtype
        # where the probes read, for the segmented mode's every step
        self._probe_reads = [
            (key, sig, None if sig is sig.base else view_indices(sig))
            for key, sig in program.probe_signals
        ]

    def reset(self, seed):
        """Go back to step 0; ``seed`` sets the randomness of the run."""
        self.feeder = InputFeeder(self.program, seed)
        self.rng = self.feeder.rng
        self.store = self.program.initial_state()
        # float64 values of the bases Python operators wrote (see HostOp), kept across
        # steps until an ONNX segment writes the base
        self.exact = {}
        self.n_steps = 0
        self._hosts = {}
        self.load_parameters()

    def load_parameters(self):
        """Make the Python operators use the current parameter values."""
        self._params_version = self.program.params.version
        if self.program.unrolled:
            return
        hosts = {}
        for op in self.program.host_operators():
            host = self._hosts.get(op)
            if isinstance(op, FeedInput):
                host = host or HostFeed(op, self.program)
            else:
                host = (host or HostOp(op, self.program, self.B, self.rng)).load_values()
            hosts[op] = host
        self._hosts = hosts

    def state_arrays(self):
        """``{signal name: array}`` of the current state (time and step excluded)."""
        skip = {self.program.model.step.base, self.program.model.time.base}
        names = self.program.names
        return {
            names.signal(base): np.array(value)
            for base, value in self.store.items()
            if base not in skip
        }

    def load_state(self, arrays):
        """Set the state from `state_arrays`' output; returns False (and changes
        nothing) if its names or shapes do not fit this program."""
        skip = {self.program.model.step.base, self.program.model.time.base}
        by_name = {
            self.program.names.signal(base): base for base in self.store if base not in skip
        }
        if sorted(by_name) != sorted(arrays) or any(
            np.shape(arrays[name]) != self.store[base].shape for name, base in by_name.items()
        ):
            return False
        for name, base in by_name.items():
            self.store[base] = np.array(arrays[name], dtype=self.store[base].dtype)
        self.exact.clear()
        return True

    # -- running ---------------------------------------------------------------------------

    def run(self, n_steps, data=None, progress=None, on_block=None):
        """Advance ``n_steps``; returns ``{probe port: [B, steps run, *shape]}``.

        With ``on_block``, ``on_block(outputs, n)`` gets each block's probe outputs
        as the ``n`` steps finish, and nothing is collected or returned; the step
        count, state and outputs are always consistent with the steps completed,
        also when a step fails.
        """
        data = data or {}
        if self._params_version != self.program.params.version:
            self.load_parameters()
        data_start = self.n_steps
        outputs = {key: [] for key, _ in self.program.probe_signals}
        done = 0
        while done < n_steps:
            if self.program.unrolled:
                n = self.program.unroll if n_steps - done >= self.program.unroll else 1
                block_out = self._run_block(n, data, data_start)
            else:
                n = 1
                block_out = self._run_segments(data, data_start)
            done += n
            if on_block is None:
                for key, value in block_out.items():
                    outputs[key].append(value)
            else:
                on_block(block_out, n)
            if progress is not None:
                progress(n)
        if on_block is not None:
            return None
        return {
            key: (
                np.concatenate(parts, axis=1)
                if parts
                else np.zeros((self.B, 0, *sig.shape), dtype=self.dtype)
            )
            for (key, sig), parts in zip(self.program.probe_signals, outputs.values())
        }

    def _run_block(self, n, data, data_start):
        block, session = self.program.block(n)
        feeds = self.feeder(block.step_inputs, self.n_steps, n, data, data_start=data_start)
        for base, in_name in block.state_inputs:
            feeds[in_name] = self.store[base]
        names = [out for _, _, out in block.state] + [out for out, _ in block.probes]
        results = session.run(names, feeds)
        # only now, with every output in hand, does the state move on
        for (base, _, _), value in zip(block.state, results):
            self.store[base] = value
        self.n_steps += n
        return {key: value for (key, _), value in zip(block.probes, results[len(block.state) :])}

    def _run_segments(self, data, data_start):
        # as in nengo.Simulator, a step that fails leaves the state as far as it got,
        # and is not counted
        store, exact = self.store, self.exact
        for kind, item in self.program.segment_blocks():
            if kind == "host":
                host = self._hosts[item]
                if isinstance(host, HostFeed):
                    values = self.feeder.exact_values(item.key, self.n_steps, data, data_start)
                    host(store, values, exact)
                else:
                    host(store, self.n_steps + 1, exact)
                continue
            block, session = item
            feeds = self.feeder(block.step_inputs, self.n_steps, 1, data, data_start=data_start)
            for base, in_name in block.state_inputs:
                feeds[in_name] = store[base]
            names = [out for _, _, out in block.state]
            for (base, _, _), value in zip(block.state, session.run(names, feeds)):
                store[base][...] = value
                if exact:
                    exact.pop(base, None)  # now the graph's value
        self.n_steps += 1
        signals = self.program.signals
        return {
            key: read_signal(store, signals, sig, self.B, index=index)[:, None]
            for key, sig, index in self._probe_reads
        }
