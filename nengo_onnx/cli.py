"""The ``nengo-onnx`` command: compile a Nengo network to ONNX, run and inspect the result.

Commands::

    nengo-onnx compile MODEL -o out.onnx [--steps K | --fixed N] [--params FILE]
                       [--minibatch B | --batch dynamic] [--opset V] [--dt DT]
    nengo-onnx run out.onnx [--inputs data.npz] [--steps N] [-o probes.npz]
    nengo-onnx inspect out.onnx
    nengo-onnx quantize out.onnx -o out_int8.onnx [--calibration data.npz]

``compile`` runs the given Python file (or imports the module) to find the
network: only compile files you trust.

Exit codes: 0 on success, 1 with a one-line error on bad input (``--debug``
shows the traceback), 2 for bad command-line usage.
"""

import argparse
import importlib
import json
import os
import runpy
import sys
import warnings
from collections import Counter

DESCRIPTION = "Compile Nengo networks to portable ONNX files, and run and inspect them."


class CLIError(Exception):
    """Bad input on the command line (printed as one line, without a traceback)."""


# -- finding the network -----------------------------------------------------------------------


def _split_spec(spec):
    """``(target, attribute or None)`` of ``FILE.py``, ``FILE.py:NAME`` or ``module:NAME``."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    target, attr = spec.rsplit(":", 1)
    if not attr or not target:
        raise CLIError(f"bad MODEL {spec!r}: expected FILE.py, FILE.py:NAME or module:NAME")
    return target, attr


def _is_file_target(target):
    return target.endswith(".py") or os.sep in target or "/" in target or os.path.exists(target)


def _namespace(target):
    """Run a Python file or import a module; returns its namespace."""
    if _is_file_target(target):
        if not os.path.isfile(target):
            raise CLIError(f"no such file: {target}")
        directory = os.path.dirname(os.path.abspath(target))
        sys.path.insert(0, directory)  # so the file can import its neighbours
        try:
            return runpy.run_path(target, run_name="nengo_onnx_model")
        except SystemExit as err:
            raise CLIError(f"{target} exited (SystemExit {err.code}) while loading") from err
        except Exception as err:
            raise CLIError(
                f"error while running {target}: {type(err).__name__}: {_one_line(err)}"
            ) from err
        finally:
            if sys.path and sys.path[0] == directory:
                sys.path.pop(0)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as err:
        if err.name and target.startswith(err.name):
            raise CLIError(f"no such file or module: {target}") from err
        raise CLIError(f"error while importing {target}: {_one_line(err)}") from err
    except Exception as err:
        raise CLIError(
            f"error while importing {target}: {type(err).__name__}: {_one_line(err)}"
        ) from err
    return vars(module)


def _as_network(obj, what):
    import nengo  # noqa: PLC0415

    if isinstance(obj, nengo.Network):
        return obj
    if callable(obj) and not isinstance(obj, type):
        try:
            result = obj()
        except Exception as err:
            raise CLIError(
                f"calling {what}() failed: {type(err).__name__}: {_one_line(err)}"
            ) from err
        if isinstance(result, nengo.Network):
            return result
        raise CLIError(f"{what}() returned {type(result).__name__}, not a nengo.Network")
    raise CLIError(
        f"{what} is a {type(obj).__name__}, not a nengo.Network or a function returning one"
    )


def load_network(spec):
    """The `nengo.Network` that ``spec`` names.

    ``spec`` is a Python file or module, optionally with ``:NAME`` naming a
    Network or a function returning one in it. Without a name: the file's
    ``network`` (a Network or function), else its one top-level Network
    (subnetworks of another top-level Network do not count).
    """
    import nengo  # noqa: PLC0415

    target, attr = _split_spec(spec)
    namespace = _namespace(target)
    if attr is not None:
        obj = namespace
        for part in attr.split("."):
            try:
                obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
            except (KeyError, AttributeError):
                raise CLIError(f"{target} has no attribute {attr!r}") from None
        return _as_network(obj, f"{target}:{attr}")
    if "network" in namespace:
        return _as_network(namespace["network"], f"{target}:network")
    found = {}
    for name, value in namespace.items():
        if isinstance(value, nengo.Network) and not name.startswith("_"):
            found.setdefault(id(value), (name, value))
    nested = {id(sub) for _, net in found.values() for sub in net.all_networks}
    tops = [(name, net) for key, (name, net) in found.items() if key not in nested]
    if not tops:
        raise CLIError(
            f"{target} defines no nengo.Network (define one at the top level or a "
            f"function `network()` returning one, or name it as {target}:NAME)"
        )
    if len(tops) > 1:
        names = ", ".join(name for name, _ in tops)
        raise CLIError(f"{target} defines several networks ({names}); choose one as {target}:NAME")
    return tops[0][1]


# -- commands ------------------------------------------------------------------------------------


def _default_output(spec):
    target, attr = _split_spec(spec)
    stem = attr or os.path.splitext(os.path.basename(target))[0].split(".")[-1]
    return f"{stem}.onnx"


def compile_command(args):
    # imports nengo: only when compiling (`nengo-onnx run` needs onnxruntime and numpy only)
    from nengo_onnx.exporting.exporter import export_network  # noqa: PLC0415

    if args.params is not None and not any(
        os.path.isfile(p) for p in (args.params, f"{args.params}.npz")
    ):
        raise CLIError(f"no such params file: {args.params}")
    network = load_network(args.model)
    output = args.output or _default_output(args.model)
    info = export_network(
        network,
        output,
        params=args.params,
        steps=args.steps,
        fixed=args.fixed,
        minibatch_size=args.minibatch,
        opset=args.opset,
        dt=args.dt,
        inputs_path=args.save_inputs,
        input_steps=args.input_steps,
        batch=args.batch,
    )
    if not args.quiet:
        print(info.summary())
        if args.save_inputs:
            n = args.input_steps or args.fixed or 1000
            print(f"wrote {args.save_inputs} (the network's own input values, {n} steps)")
    return 0


def run_command(args):
    from nengo_onnx.exporting import runner  # noqa: PLC0415

    return runner.run_command(args)


def quantize_command(args):
    from nengo_onnx.exporting.quantize import quantize  # noqa: PLC0415  (no nengo)

    result = quantize(args.model, args.output, calibration=args.calibration, n_steps=args.steps)
    if not args.quiet:
        before, after = result["size_before"], result["size_after"]
        print(f"wrote {args.output}: {result['method']}")
        print(f"  {result['quantized']} weight matrices in int8")
        print(f"  size: {before:,} -> {after:,} bytes ({after / before:.0%})")
        if "deviation" in result:
            print("  max deviation of the outputs on the calibration data:")
            for name, value in result["deviation"].items():
                print(f"    {name}: {value:.4g}")
    return 0


def model_report(path):
    """``{metadata, inputs, outputs, ops}`` of an ONNX file (any ONNX file)."""
    import onnx  # noqa: PLC0415

    if not os.path.isfile(path):
        raise CLIError(f"no such file: {path}")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as err:
        raise CLIError(f"cannot read {path} as ONNX: {_one_line(err)}") from err

    def ports(values):
        out = []
        for v in values:
            tt = v.type.tensor_type
            dims = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in tt.shape.dim
            ]
            out.append(
                {
                    "name": v.name,
                    "shape": dims,
                    "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
                    if tt.elem_type
                    else "?",
                }
            )
        return out

    ops = Counter()

    def count(graph):
        for node in graph.node:
            ops[node.op_type if not node.domain else f"{node.domain}.{node.op_type}"] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    count(attr.g)
                for sub in attr.graphs:
                    count(sub)

    count(model.graph)
    metadata = {}
    for prop in model.metadata_props:
        try:
            metadata[prop.key] = json.loads(prop.value)
        except ValueError:
            metadata[prop.key] = prop.value
    return {
        "file": path,
        "size": os.path.getsize(path),
        "ir_version": model.ir_version,
        "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "producer": model.producer_name,
        "metadata": metadata,
        "inputs": ports(model.graph.input),
        "outputs": ports(model.graph.output),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def inspect_command(args):
    report = model_report(args.model)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    meta = dict(report["metadata"])
    details = {
        p.get("name"): p
        for key in ("inputs", "outputs", "states")
        for p in (meta.get(key) or [])
        if isinstance(p, dict)
    }
    details.update(
        {
            p["output"]: p
            for p in (meta.get("states") or [])
            if isinstance(p, dict) and "output" in p
        }
    )
    print(
        f"{report['file']}: {report['size']:,} bytes, IR {report['ir_version']}, opsets "
        + ", ".join(f"{d} {v}" for d, v in report["opsets"].items())
    )
    print("metadata:")
    if not meta:
        print("  (none: not written by nengo-onnx)")
    for key, value in meta.items():
        if key in ("inputs", "outputs", "states"):
            value = f"{len(value)} entries (listed below)" if isinstance(value, list) else value
        print(f"  {key}: {value}")
    for key in ("inputs", "outputs"):
        print(f"{key}:")
        for port in report[key]:
            info = details.get(port["name"], {})
            note = info.get("object") or info.get("signal") or ""
            print(
                f"  {port['name']}: {port['shape']} {port['dtype']}"
                + (f"  {note}" if note else "")
            )
    print(f"ops ({sum(report['ops'].values())} nodes):")
    for op, n in report["ops"].items():
        print(f"  {op}: {n}")
    return 0


# -- the parser --------------------------------------------------------------------------------


def build_parser():
    from nengo_onnx.exporting import runner  # noqa: PLC0415  (onnxruntime and numpy only)

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error",
    )
    parser = argparse.ArgumentParser(prog="nengo-onnx", description=DESCRIPTION, parents=[debug])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "compile",
        parents=[debug],
        help="compile a Nengo network to an ONNX file",
        description="Compile a Nengo network to a portable ONNX inference model, with its "
        "current (or --params) parameters, and print a summary. MODEL is run as Python "
        "code: compile only files you trust.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a Python file or module, optionally :NAME, defining a nengo.Network "
        "or a function returning one (without NAME: `network`, or the one "
        "top-level Network)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT.onnx",
        help="the file to write (default: MODEL's name with .onnx)",
    )
    form = p.add_mutually_exclusive_group()
    form.add_argument(
        "--steps",
        type=_positive,
        metavar="K",
        help="streaming model of K steps per call, with state inputs and "
        "outputs (the default form; default K: 10)",
    )
    form.add_argument(
        "--fixed",
        type=_positive,
        metavar="N",
        help="fixed-length model: N steps from the initial state",
    )
    p.add_argument(
        "--params",
        metavar="FILE",
        help="parameters saved by Simulator.save_params (e.g. after training)",
    )
    p.add_argument(
        "--minibatch",
        type=_positive,
        default=1,
        metavar="B",
        help="batch size of the model's inputs and outputs (default: 1)",
    )
    p.add_argument(
        "--opset",
        type=int,
        metavar="V",
        help="ONNX opset, 13 to 21 (default: the oldest the network can be written at, "
        "usually 13, which most engines and converters read)",
    )
    p.add_argument(
        "--batch",
        choices=["dynamic"],
        help="dynamic: one file for any batch size (a symbolic batch axis), "
        "instead of --minibatch",
    )
    p.add_argument("--dt", type=float, default=0.001, help="timestep in seconds (0.001)")
    p.add_argument(
        "--save-inputs",
        metavar="DATA.npz",
        help="also write the network's own input values (e.g. of Node(np.sin)), "
        "for `run --inputs`",
    )
    p.add_argument(
        "--input-steps",
        type=_positive,
        metavar="N",
        help="steps of --save-inputs (default: the fixed length, or 1000)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=compile_command)

    p = sub.add_parser(
        "run",
        parents=[debug],
        help="run an exported model with onnxruntime",
        description="Run an exported model with onnxruntime (no nengo needed), streaming "
        "block after block, with progress on stderr.",
    )
    runner.add_arguments(p)
    p.set_defaults(func=run_command)

    p = sub.add_parser(
        "inspect",
        parents=[debug],
        help="show an ONNX file's metadata, inputs, outputs and op counts",
        description="Show an ONNX file's metadata, inputs, outputs and op counts.",
    )
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=inspect_command)

    p = sub.add_parser(
        "quantize",
        parents=[debug],
        help="write an exported model with int8 weights",
        description="Write an exported model with int8 weights (onnxruntime's quantization "
        "tools, MatMul weights only): dynamic quantization, or with --calibration static "
        "QDQ with uint8 activations calibrated on the network's own inputs. Prints the "
        "sizes and, with --calibration, the outputs' largest deviation on that data.",
    )
    p.add_argument("model", metavar="IN.onnx", help="a model written by compile")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the file to write")
    p.add_argument(
        "--calibration",
        metavar="DATA.npz",
        help="inputs as for `run --inputs` (e.g. from compile --save-inputs): calibrate "
        "static QDQ quantization on them and report the deviation",
    )
    p.add_argument(
        "--steps", type=_positive, metavar="N", help="steps of the calibration data to use"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=quantize_command)
    return parser


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {value})")
    return value


def _one_line(err):
    text = " ".join(str(err).split())
    return text or type(err).__name__


def main(argv=None):
    """Run the ``nengo-onnx`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from nengo_onnx import __version__  # noqa: PLC0415

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            return args.func(args) or 0
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        sys.stderr.write(f"nengo-onnx {args.command}: interrupted\n")
        return 130
    except Exception as err:
        if getattr(args, "debug", False):
            raise
        known = _known_errors()
        message = _one_line(err)
        if not isinstance(err, known):
            message = f"{type(err).__name__}: {message} (run with --debug for the traceback)"
        sys.stderr.write(f"nengo-onnx {args.command}: error: {message}\n")
        return 1


def _one_line_warning(command):
    def show(message, category, filename, lineno, file=None, line=None):
        stream = sys.stderr if file is None else file
        stream.write(f"nengo-onnx {command}: warning: {_one_line(message)}\n")

    return show


def _known_errors():
    from nengo_onnx.exporting.runner import RunnerError  # noqa: PLC0415

    known = [CLIError, RunnerError, OSError]
    if "nengo" in sys.modules:
        from nengo.exceptions import NengoException  # noqa: PLC0415

        known.append(NengoException)
    return tuple(known)


if __name__ == "__main__":
    sys.exit(main())
