"""int8 weights for an exported model (``nengo-onnx quantize``), with onnxruntime's tools.

Two ways, both from ``onnxruntime.quantization``, both only for ``MatMul`` (the
weights; neuron and synapse dynamics stay in floating point):

* without calibration data, **dynamic**: int8 weights, activations quantized at
  run time (``quantize_dynamic``);
* with calibration data (the network's own inputs, e.g. from
  ``nengo-onnx compile --save-inputs``), **static QDQ**: int8 weights and uint8
  activations whose ranges are calibrated on that data. (int8 activations give
  a model that onnxruntime 1.19 refuses to load.)

Needs onnx and onnxruntime, not nengo. The model keeps its nengo-onnx metadata,
with ``quantized`` added, so `nengo_onnx.exporting.runner` runs it as before.
"""

import logging
import os
import tempfile

import numpy as np
import onnx

from nengo_onnx.exporting.runner import ExportedModel, RunnerError, load_inputs, write_file


class QuantizeError(RunnerError):
    """The model cannot be quantized (a one-line message for the command line)."""


def quantize(path, output, calibration=None, n_steps=None):
    """Write ``path``'s model with int8 weights to ``output``.

    Parameters
    ----------
    path, output : str
        The exported model and the file to write.
    calibration : dict or str, optional
        ``{input name: (batch, n_steps, *shape)}`` or an ``.npz`` of them: static
        QDQ calibrated on this data (else dynamic quantization).
    n_steps : int, optional
        Steps of the calibration data to use (default: all, or the fixed length).

    Returns
    -------
    dict
        ``method``, ``size_before``, ``size_after``, ``quantized`` (MatMuls with
        int8 weights), and with calibration data ``deviation`` (``{output: max
        abs difference}``) over the calibration data.
    """
    from onnxruntime import quantization as q  # noqa: PLC0415

    path, output = os.fspath(path), os.fspath(output)
    original = ExportedModel(path)
    if isinstance(calibration, (str, os.PathLike)):
        calibration = load_inputs(calibration)
    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise QuantizeError(f"cannot write {output}: directory {directory} does not exist")
    # onnxruntime's tools log advice (pre-processing) on the root logger: not for users here
    logging.disable(logging.WARNING)
    try:
        quantized, method = _quantize(q, path, original, calibration, n_steps)
    finally:
        logging.disable(logging.NOTSET)
    del quantized.metadata_props[:]
    for key, value in meta.items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, value
    entry = quantized.metadata_props.add()
    entry.key, entry.value = "quantized", method
    n_quantized = _count_int8_weights(quantized.graph)
    if n_quantized == 0:
        if any(n.op_type == "Scan" for n in model.graph.node):
            raise QuantizeError(
                f"{path}'s weights are inside a Scan (a fixed-length model longer than its "
                "block), which onnxruntime's quantization tools do not reach: quantize a "
                "streaming model (--steps K) or a fixed one of at most one block"
            )
        raise QuantizeError(f"{path} has no MatMul with a constant weight to quantize")
    data = quantized.SerializeToString()
    write_file(output, data)
    result = {
        "method": method,
        "size_before": os.path.getsize(path),
        "size_after": len(data),
        "quantized": n_quantized,
    }
    if calibration is not None:
        result["deviation"] = deviation(original, ExportedModel(output), calibration, n_steps)
    return result


def _quantize(q, path, original, calibration, n_steps):
    """``(quantized onnx.ModelProto, description of the method)``."""
    with tempfile.TemporaryDirectory() as tmp:
        out_tmp = os.path.join(tmp, "quantized.onnx")
        if calibration is None:
            method = "dynamic (int8 weights, activations quantized at run time)"
            q.quantize_dynamic(
                path, out_tmp, weight_type=q.QuantType.QInt8, op_types_to_quantize=["MatMul"]
            )
        else:
            method = "static QDQ (8-bit weights, uint8 activations calibrated on the data)"
            feeds = _calibration_feeds(original, calibration, n_steps)
            q.quantize_static(
                path,
                out_tmp,
                _Reader(feeds),
                quant_format=q.QuantFormat.QDQ,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                calibrate_method=q.CalibrationMethod.MinMax,
            )
        return onnx.load(out_tmp), method


def deviation(original, quantized, inputs, n_steps=None):
    """``{output: max |quantized - original|}`` of two `ExportedModel` on ``inputs``."""
    a = original.run(inputs, n_steps=n_steps)
    b = quantized.run(inputs, n_steps=n_steps)
    return {name: float(np.max(np.abs(b[name] - a[name]), initial=0.0)) for name in a}


def _count_int8_weights(graph):
    count = 0
    for tensor in graph.initializer:
        eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
        if tensor.data_type in eight_bit and len(tensor.dims) >= 2:
            count += 1
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                count += _count_int8_weights(attr.g)
    return count


def _calibration_feeds(model, inputs, n_steps):
    """Every call's feeds of a run of ``model`` on ``inputs`` (streaming: with its states)."""
    feeds = []
    session = model.session
    original_call = model._call  # noqa: SLF001  (record what each call is fed)

    def record(values):
        feeds.append(dict(values))
        return original_call(values)

    model._call = record  # noqa: SLF001
    try:
        model.run(inputs, n_steps=n_steps)
    finally:
        del model._call  # noqa: SLF001
    names = {i.name for i in session.get_inputs()}
    return [{k: v for k, v in f.items() if k in names} for f in feeds]


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over recorded feeds."""

    def __init__(self, feeds):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)

    def rewind(self):  # pragma: no cover  (not called by MinMax)
        pass
