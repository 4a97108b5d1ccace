"""Run compiled blocks with onnxruntime, carrying state between calls.

Two modes:

* **unrolled** (every operator has an ONNX form): one model runs ``K`` steps per
  call; the remainder of a run that is not a multiple of ``K`` uses a one-step
  model. State stays in onnxruntime ``OrtValue``s between calls (IO binding).
* **segmented** (some operators run in Python): every step runs the ONNX segments
  and the Python operators in schedule order on a store of numpy arrays.
"""

import numpy as np

from nengo_onnx import ort_setup as _ort
from nengo_onnx.compiler.block import emit_block
from nengo_onnx.runtime.host import HostOp, TimeFeeder, read_signal
from nengo_onnx.passes.unroll import unroll, unrolled_order

RANDOM_PREFIX = "rand."


class Runtime:
    def __init__(self, graph, signals, probes, *, minibatch_size, dtype, dt, unroll_steps,
                 threads=None):
        self.graph = graph
        self.model = graph.graph["model"]
        self.signals = signals
        self.probes = probes  # [(key, Signal)]
        self.B = minibatch_size
        self.dtype = np.dtype(dtype)
        self.dt = dt
        self.K = unroll_steps
        self.threads = threads
        self.segments = graph.graph["segments"]
        self.unrolled = len(self.segments) <= 1 and all(k == "onnx" for k, _ in self.segments)
        self.feeder = TimeFeeder(graph.graph["feeds"], self.model, dt)
        self._blocks = {}
        self._compiled_segments = None

    # -- compilation ---------------------------------------------------------------------

    def _session(self, block):
        return _ort.inference_session(block.model.SerializeToString(), threads=self.threads)

    def block(self, n_steps):
        """The compiled ``n_steps`` model of the whole step (unrolled mode)."""
        if n_steps not in self._blocks:
            ops = self.segments[0][1] if self.segments else []
            sub = self.graph.subgraph(ops)
            steps = [(t, op) for t, op in unrolled_order(unroll(sub, n_steps))]
            block = emit_block(
                steps, self.signals, n_steps=n_steps, minibatch_size=self.B,
                dtype=self.dtype, dt=self.dt, probes=self.probes,
            )
            self._blocks[n_steps] = (block, self._session(block))
        return self._blocks[n_steps]

    def _segments(self):
        """The step's segments: ``("onnx", (block, session))`` or ``("host", op)``."""
        if self._compiled_segments is None:
            compiled = []
            for kind, item in self.segments:
                if kind == "host":
                    compiled.append(("host", item))
                    continue
                touched, written = [], []
                for op in item:
                    for sig in op.all_signals:
                        if not self.signals.is_static(sig.base) and sig.base not in touched:
                            touched.append(sig.base)
                    for sig in op.sets + op.incs + op.updates:
                        if sig.base not in written:
                            written.append(sig.base)
                if not written:  # e.g. only SimProbe markers: nothing to compute
                    continue
                steps = [(0, op) for op in item]
                block = emit_block(
                    steps, self.signals, n_steps=1, minibatch_size=self.B, dtype=self.dtype,
                    dt=self.dt, state_in=touched, state_out=written,
                )
                compiled.append(("onnx", (block, self._session(block))))
            self._compiled_segments = compiled
        return self._compiled_segments

    def invalidate(self):
        """Forget compiled models (parameters changed); Python operators keep their state."""
        self._blocks.clear()
        if self._compiled_segments is not None:
            self._compiled_segments = None
            hosts = iter([item for kind, item in self._host_segments if kind == "host"])
            self._host_segments = [
                ("host", next(hosts).load_values()) if kind == "host" else (kind, item)
                for kind, item in self._segments()
            ]

    # -- running ---------------------------------------------------------------------------

    def reset(self, seed):
        self.rng = np.random.RandomState(seed)
        self.feeder.reset(self.rng)
        self.noise_rng = np.random.RandomState(self.rng.randint(2**31 - 1))
        self.store = {}
        for base in self.signals.state_bases():
            value = self.signals.initial_value(base, self.dtype)
            if self.signals.batched(base):
                value = np.broadcast_to(value, (self.B, *value.shape))
            self.store[base] = np.array(value)
        self.n_steps = 0
        if not self.unrolled:
            self._host_segments = [
                ("host", HostOp(item, self.signals, self.B, self.dt, self.rng, self.dtype))
                if kind == "host" else (kind, item)
                for kind, item in self._segments()
            ]

    def _step_inputs(self, block, start, n_steps, data):
        feeds = {}
        computed = self.feeder.all_values(
            [k for k in block.step_inputs if k in self.feeder.feeds and k not in data],
            start, n_steps,
        )
        for key, (shape, dtype) in block.step_inputs.items():
            if key in data:
                value = data[key][:, start - self._data_start:start - self._data_start + n_steps]
            elif key in computed:
                value = np.broadcast_to(computed[key][None], (self.B, n_steps, *shape))
            elif key.startswith(RANDOM_PREFIX):
                value = self.noise_rng.random_sample((self.B, n_steps, *shape))
            else:
                raise KeyError(key)
            feeds[key] = np.ascontiguousarray(value, dtype=dtype)
        return feeds

    def run(self, n_steps, data=None, progress=None):
        """Advance ``n_steps``; returns ``{probe key: [B, n_steps, *shape]}``."""
        data = data or {}
        self._data_start = self.n_steps
        outputs = {key: [] for key, _ in self.probes}
        done = 0
        while done < n_steps:
            if self.unrolled:
                n = self.K if n_steps - done >= self.K else 1
                self._run_block(n, data, outputs)
            else:
                n = 1
                self._run_segments(data, outputs)
            done += n
            self.n_steps += n
            if progress is not None:
                progress(n)
        return {
            key: (np.concatenate(parts, axis=1) if parts else
                  np.zeros((self.B, 0, *sig.shape), dtype=self.dtype))
            for (key, sig), parts in zip(self.probes, outputs.values())
        }

    def _run_block(self, n, data, outputs):
        block, session = self.block(n)
        feeds = self._step_inputs(block, self.n_steps, n, data)
        for base, in_name in block.state_inputs:
            feeds[in_name] = self.store[base]
        names = [out for _, _, out in block.state] + [out for _, out, _ in block.probes]
        results = session.run(names, feeds)
        for (base, _, _), value in zip(block.state, results):
            self.store[base] = value
        for (key, _, _), value in zip(block.probes, results[len(block.state):]):
            outputs[key].append(value)

    def _run_segments(self, data, outputs):
        for kind, item in self._host_segments:
            if kind == "host":
                item(self.store, self.n_steps + 1)
                continue
            block, session = item
            feeds = self._step_inputs(block, self.n_steps, 1, data)
            for base, in_name in block.state_inputs:
                feeds[in_name] = self.store[base]
            names = [out for _, _, out in block.state]
            for (base, _, _), value in zip(block.state, session.run(names, feeds)):
                self.store[base][...] = value
        for key, sig in self.probes:
            outputs[key].append(read_signal(self.store, self.signals, sig, self.B)[:, None])
