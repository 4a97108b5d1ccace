"""Run a model written by ``nengo-onnx compile``, with onnxruntime and numpy only.

This module imports nothing from nengo or the rest of nengo-onnx, so it can be
copied next to an exported model and run wherever onnxruntime runs::

    python runner.py model.onnx --inputs data.npz --steps 1000 -o probes.npz

(``nengo-onnx run`` is the same command.) A streaming model runs block after
block: the first block gets all-zero state inputs (which the model reads as the
network's initial state) and every later block the ``state_out.*`` of the one
before. A run that is not a whole number of blocks is padded with zeros at the
end and the outputs are cut back to ``n_steps``.

Inputs that ``data`` leaves out get the Node's constant value if it has one,
uniform ``[0, 1)`` numbers for ``rand.*`` inputs, and zeros otherwise (with a
warning: e.g. a ``Node(np.sin)`` needs its values fed).
"""

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort


class RunnerError(Exception):
    """Bad input to the runner (a one-line message for the command line)."""


def _session_options(threads=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        so.intra_op_num_threads = threads
    return so


def read_metadata(meta_map):
    """Parse nengo-onnx's ``metadata_props`` (``{key: str}``) into Python values."""
    if meta_map.get("producer") != "nengo-onnx" or "format" not in meta_map:
        raise RunnerError(
            "not a model written by nengo-onnx compile (it has no nengo-onnx metadata)"
        )
    meta = {}
    for key, value in meta_map.items():
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return meta


class ExportedModel:
    """An exported model loaded in an onnxruntime ``InferenceSession``.

    Parameters
    ----------
    path : str
        The ``.onnx`` file.
    threads : int, optional
        onnxruntime's intra-op threads.
    """

    def __init__(self, path, threads=None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise RunnerError(f"no such file: {path}")
        check_external_data(path)
        try:
            self.session = ort.InferenceSession(
                path, _session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise RunnerError(f"onnxruntime cannot load {path}: {_first_line(err)}") from err
        self.meta = read_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.form = self.meta["format"]
        self.steps = int(self.meta["steps"])
        batch = self.meta["minibatch_size"]
        # a model exported with a dynamic batch ("batch") takes any batch size
        self.batch = None if isinstance(batch, str) else int(batch)
        self.dt = float(self.meta["dt"])
        self.inputs = self.meta["inputs"]
        self.outputs = self.meta["outputs"]
        self.states = self.meta.get("states") or []

    def run(self, inputs=None, n_steps=None, seed=0, progress=None, warn=None):
        """Run ``n_steps`` steps; returns ``{output name: [batch, n, *shape]}``.

        Parameters
        ----------
        inputs : dict, optional
            ``{input name: (batch, n_steps, *shape)}`` (``(n_steps, *shape)`` is taken
            as batch 1, and batch 1 is repeated to the model's batch).
        n_steps : int, optional
            Steps to run (default: the length of ``inputs``, or the fixed length).
        seed : int
            Seed of the random numbers for ``rand.*`` inputs.
        progress : callable, optional
            Called as ``progress(steps_done, n_steps)`` after every call.
        warn : callable, optional
            Called with a message for each input filled with zeros.
        """
        inputs = dict(inputs or {})
        unknown = sorted(set(inputs) - {p["name"] for p in self.inputs})
        if unknown:
            raise RunnerError(
                f"the model has no input(s) {unknown}; its inputs are "
                f"{[p['name'] for p in self.inputs]}"
            )
        arrays = {
            p["name"]: self._check_input(p, inputs[p["name"]])
            for p in self.inputs
            if p["name"] in inputs
        }
        batch = self.batch
        if batch is None:  # dynamic: the inputs' batch (batch 1 is repeated to it)
            sizes = {v.shape[0] for v in arrays.values()} - {1}
            if len(sizes) > 1:
                raise RunnerError(
                    f"the inputs have different batch sizes: "
                    f"{ {k: v.shape[0] for k, v in arrays.items()} }"
                )
            batch = sizes.pop() if sizes else 1
            arrays = {
                k: (np.repeat(v, batch, axis=0) if v.shape[0] != batch else v)
                for k, v in arrays.items()
            }
        self.run_batch = batch
        n_steps = self._n_steps(n_steps, arrays)
        self.last_n_steps = n_steps
        K = self.steps
        total = n_steps if self.form == "fixed" else math.ceil(n_steps / K) * K
        rng = np.random.default_rng(seed)
        feeds = {}
        for port in self.inputs:
            value = arrays.get(port["name"])
            if value is None:
                value = self._default(port, total, rng, warn)
            elif value.shape[1] < total:  # pad the last block
                pad = np.zeros((batch, total - value.shape[1], *value.shape[2:]), value.dtype)
                value = np.concatenate([value, pad], axis=1)
            feeds[port["name"]] = np.ascontiguousarray(
                value[:, :total], dtype=np.dtype(port["dtype"])
            )
        if self.form == "fixed":
            results = self._call(feeds)
            if progress is not None:
                progress(n_steps, n_steps)
        else:
            results = self._stream(feeds, total, n_steps, progress)
        return {
            p["name"]: _sample(results[p["name"]][:, :n_steps], p.get("sample_every"))
            for p in self.outputs
        }

    def _check_input(self, port, value):
        value = np.asarray(value)
        shape = tuple(port["shape"])
        if value.dtype.kind not in "fiub":
            raise RunnerError(f"input {port['name']!r} has dtype {value.dtype}; expected numbers")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise RunnerError(
                f"input {port['name']!r} has {bad} non-finite value(s) (NaN or inf); "
                "the Simulator rejects such data too"
            )
        if value.ndim == len(shape) + 1:
            value = value[None]
        if value.ndim != len(shape) + 2 or tuple(value.shape[2:]) != shape:
            raise RunnerError(
                f"input {port['name']!r} has shape {value.shape}; expected (batch, n_steps, "
                f"{', '.join(map(str, shape))})".replace(", )", ")")
            )
        if self.batch is None:  # a model with a dynamic batch takes any batch
            return value
        if value.shape[0] == 1 and self.batch > 1:
            value = np.repeat(value, self.batch, axis=0)
        if value.shape[0] != self.batch:
            raise RunnerError(
                f"input {port['name']!r} has batch {value.shape[0]}, but the model was "
                f"compiled for minibatch {self.batch} (compile with --minibatch "
                f"{value.shape[0]})"
            )
        return value

    def _n_steps(self, n_steps, arrays):
        lengths = {name: value.shape[1] for name, value in arrays.items()}
        if n_steps is None:
            if self.form == "fixed":
                n_steps = self.steps
            elif lengths:
                n_steps = min(lengths.values())
                if len(set(lengths.values())) > 1:
                    raise RunnerError(f"the inputs have different lengths: {lengths}")
            else:
                raise RunnerError("give the number of steps (--steps) or inputs (--inputs)")
        if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 1:
            raise RunnerError(f"steps must be a positive integer (got {n_steps!r})")
        n_steps = int(n_steps)
        if self.form == "fixed" and n_steps != self.steps:
            raise RunnerError(
                f"this fixed-length model runs exactly {self.steps} steps "
                f"(asked for {n_steps}); compile it with --fixed {n_steps} "
                "or as a streaming model"
            )
        short = {name: n for name, n in lengths.items() if n < n_steps}
        if short:
            raise RunnerError(f"inputs shorter than {n_steps} steps: {short}")
        return n_steps

    def _default(self, port, n, rng, warn):
        shape = (self.run_batch, n, *port["shape"])
        if port.get("default") is not None:
            value = np.asarray(port["default"]).reshape(port["shape"])
            return np.broadcast_to(value, shape)
        if port.get("kind") == "random":
            return rng.random(shape)
        if warn is not None:
            warn(
                f"no values for input {port['name']!r} ({port.get('object') or 'input'}): "
                "feeding zeros"
            )
        return np.zeros(shape)

    def _call(self, feeds):
        try:
            values = self.session.run(None, feeds)
        except Exception as err:
            raise RunnerError(f"onnxruntime failed: {_first_line(err)}") from err
        return dict(zip([o.name for o in self.session.get_outputs()], values))

    def initial_state(self, batch=None):
        """The state inputs of the first block: zeros (the model's initial state).

        ``batch`` sizes the batch axis of a model with a dynamic batch (default 1).
        """
        batch = batch or self.batch or 1
        return {
            s["name"]: np.zeros(
                [batch if isinstance(d, str) else d for d in s["shape"]],
                dtype=np.dtype(s["dtype"]),
            )
            for s in self.states
        }

    def _stream(self, feeds, total, n_steps, progress):
        K = self.steps
        state = self.initial_state(self.run_batch)
        parts = {p["name"]: [] for p in self.outputs}
        for start in range(0, total, K):
            block = {name: value[:, start : start + K] for name, value in feeds.items()}
            block.update(state)
            results = self._call(block)
            state = {s["name"]: results[s["output"]] for s in self.states}
            for name, values in parts.items():
                values.append(results[name])
            if progress is not None:
                progress(min(start + K, n_steps), n_steps)
        return {
            name: (np.concatenate(values, axis=1) if values else None)
            for name, values in parts.items()
        }


# -- external data, read from the protobuf with the standard library ----------------------------
# Field numbers from onnx.proto: the messages that can hold a TensorProto, and where.
_MODEL = {7: "graph", 20: "training", 25: "function"}
_SUB = {
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}


def _varint(data, i):
    value = shift = 0
    while True:
        if i >= len(data):
            raise RunnerError("not a valid ONNX file (truncated protobuf)")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _fields(data):
    """``(field number, wire type, value)`` of a protobuf message (bytes for type 2)."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = None, i + 8
        elif wire == 5:
            value, i = None, i + 4
        elif wire == 2:
            n, i = _varint(data, i)
            value, i = data[i : i + n], i + n
        else:
            raise RunnerError("not a valid ONNX file (unknown protobuf wire type)")
        yield number, wire, value


def _external_locations(data, kind="model"):
    """Every ``location`` of external data that the model's tensors name."""
    table = _MODEL if kind == "model" else _SUB[kind]
    for number, wire, value in _fields(data):
        if wire != 2:
            continue
        if kind == "tensor" and number == 13:  # external_data: StringStringEntryProto
            entry = {n: v for n, w, v in _fields(value) if w == 2}
            if entry.get(1) == b"location":
                yield entry.get(2, b"").decode("utf-8", "replace")
        elif number in table:
            yield from _external_locations(value, table[number])


def _sample(values, period):
    """Keep the steps a probe with ``sample_every`` keeps (as nengo: ``step % period < 1``)."""
    if not period or period == 1:
        return values
    steps = np.arange(1, values.shape[1] + 1)
    return values[:, steps % period < 1]


def _first_line(err):
    text = str(err).strip()
    return " ".join(text.split()) if text else type(err).__name__


def load_inputs(path):
    """``{name: array}`` from an ``.npz`` file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise RunnerError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise RunnerError(f"{path} is not an .npz file (one array per input)")
            return {key: data[key] for key in data.files}
    except RunnerError:
        raise
    except Exception as err:
        raise RunnerError(f"cannot read inputs file {path}: {_first_line(err)}") from err


def save_outputs(path, outputs):
    """Write ``{name: array}`` to ``path`` (``.npz``) through a temporary file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise RunnerError(f"cannot write {path}: directory {directory} does not exist")
    buffer = io.BytesIO()
    np.savez(buffer, **outputs)
    write_file(path, buffer.getvalue())


def write_file(path, data):
    """Write ``data`` (bytes) to ``path`` through a temporary file and a rename.

    The file gets the mode an ordinary write gives it: that of the file it
    replaces, else ``0o666`` less the umask (`tempfile.mkstemp` alone makes it
    0600). A copy of `nengo_onnx.files.write_atomically`'s rule, so that this
    module stays standalone.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_nengo_onnx_", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_external_data(path):
    """Refuse a model whose external data lies outside its own folder.

    nengo-onnx never writes external data, but onnxruntime opens whatever file a
    model names: an absolute ``location``, or one that leaves the model's folder
    (``../../etc/passwd``), could read any file into the outputs. Reads the
    protobuf with the standard library only (onnx is not needed).
    """
    with open(path, "rb") as f:
        data = f.read()
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    for location in _external_locations(data):
        target = os.path.realpath(os.path.join(folder, location))
        if (
            os.path.isabs(location)
            or location.startswith(("/", "\\"))
            or (len(location) > 1 and location[1] == ":")
            or os.path.commonpath([folder, target]) != folder
        ):
            raise RunnerError(
                f"refusing to run {path}: it names external data {location!r}, "
                "which is absolute or outside the model's folder"
            )


# -- the command -------------------------------------------------------------------------------


def add_arguments(parser):
    """The ``run`` command's arguments."""
    parser.add_argument("model", metavar="MODEL.onnx", help="a model written by compile")
    parser.add_argument(
        "--inputs",
        metavar="DATA.npz",
        help="one array per model input, keyed by the input's name, shaped (batch, n_steps, d)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help="steps to run (default: the inputs' length, or the fixed length)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="PROBES.npz",
        help="write one array per model output, keyed by its name",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for rand.* inputs")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")


class _Progress:
    """Progress on stderr: a rewritten line on a terminal, a few lines otherwise."""

    def __init__(self, stream, quiet):
        self.stream, self.quiet = stream, quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.time()
        self.last = -1.0

    def __call__(self, done, total):
        if self.quiet:
            return
        now = time.time()
        if done < total and now - self.last < (0.1 if self.tty else 2.0):
            return
        self.last = now
        line = f"running: {done}/{total} steps ({100 * done // total}%)"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run_command(args, out=None, err=None):
    """Run ``nengo-onnx run`` with parsed ``args``; returns the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    model = ExportedModel(args.model, threads=args.threads)
    inputs = load_inputs(args.inputs) if args.inputs else None

    def warn(message):
        err.write(f"nengo-onnx run: warning: {message}\n")

    start = time.time()
    outputs = model.run(
        inputs, n_steps=args.steps, seed=args.seed, progress=_Progress(err, args.quiet), warn=warn
    )
    elapsed = time.time() - start
    if args.output:
        save_outputs(args.output, outputs)
    if not args.quiet:
        out.write(
            f"ran {model.last_n_steps} steps ({model.form} model, {model.steps} steps "
            f"per call) in {elapsed:.2f} s\n"
        )
        for name, value in outputs.items():
            stats = (
                f"mean {value.mean():.4g}, min {value.min():.4g}, max {value.max():.4g}"
                if value.size
                else "empty"
            )
            out.write(f"  {name}: {list(value.shape)} {stats}\n")
        if args.output:
            out.write(f"wrote {args.output}\n")
    return 0


def main(argv=None):
    """Stand-alone entry point (``python runner.py MODEL.onnx ...``)."""
    parser = argparse.ArgumentParser(prog="nengo-onnx run", description=__doc__.split("\n")[0])
    add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except (RunnerError, OSError) as err:
        if args.debug:
            raise
        sys.stderr.write(f"nengo-onnx run: error: {_first_line(err)}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
