"""simplify: slices of concatenations, identity reshapes and zero additions go, values stay."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nengo_onnx import ort_setup
from nengo_onnx.training.cleanup import simplify


def ints(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def model():
    """Y written into the middle of a merged base X, then read back in pieces."""
    nodes = [
        helper.make_node("Slice", ["X", "s0", "s2", "ax1"], ["x_lo"]),
        helper.make_node("Slice", ["X", "s2", "s5", "ax1"], ["x_hi"]),
        helper.make_node("Concat", ["x_lo", "Y", "x_hi"], ["merged"], axis=1),
        helper.make_node("Reshape", ["merged", "shape28"], ["merged_r"]),
        helper.make_node("Slice", ["merged_r", "s2", "s5", "ax1"], ["y_back"]),
        helper.make_node("Expand", ["zeros3", "shape23"], ["z"]),
        helper.make_node("Add", ["y_back", "z"], ["o1"]),
        helper.make_node("Slice", ["merged_r", "s5", "s7", "ax1"], ["o2"]),
        helper.make_node("Slice", ["merged_r", "s1", "s4", "ax1"], ["o3"]),
        helper.make_node("Add", ["o1", "P"], ["o4"]),  # P is a parameter (all zeros)
        helper.make_node("Neg", ["X"], ["unused"]),
        helper.make_node("Expand", ["b3", "shape23"], ["b_full"]),
        helper.make_node("Add", ["b_full", "Y"], ["o5"]),  # broadcasting does the Expand
    ]
    inputs = [
        helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 5]),
        helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3]),
    ]
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
        for name, shape in (
            ("o1", [2, 3]),
            ("o2", [2, 2]),
            ("o3", [2, 3]),
            ("o4", [2, 3]),
            ("o5", [2, 3]),
        )
    ]
    inits = [
        ints("s0", [0]),
        ints("s1", [1]),
        ints("s2", [2]),
        ints("s4", [4]),
        ints("s5", [5]),
        ints("s7", [7]),
        ints("ax1", [1]),
        ints("shape28", [2, 8]),
        ints("shape23", [2, 3]),
        numpy_helper.from_array(np.zeros(3, np.float32), "zeros3"),
        numpy_helper.from_array(np.zeros((2, 3), np.float32), "P"),
        numpy_helper.from_array(np.arange(3, dtype=np.float32), "b3"),
    ]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def run(m, feeds):
    return ort_setup.inference_session(m.SerializeToString()).run(None, feeds)


def test_simplify_keeps_values_and_drops_data_movement():
    rng = np.random.RandomState(0)
    feeds = {"X": rng.rand(2, 5).astype(np.float32), "Y": rng.rand(2, 3).astype(np.float32)}
    original = model()
    expected = run(original, feeds)
    simplified = model()
    simplify(simplified, param_names=["P"])
    onnx.checker.check_model(simplified)
    for got, want in zip(run(simplified, feeds), expected):
        assert np.array_equal(got, want)

    nodes = {node.output[0]: node for node in simplified.graph.node}
    assert nodes["o1"].op_type == "Identity" and list(nodes["o1"].input) == ["Y"]
    # a slice inside one part reads that part; one across parts still reads the merge
    assert nodes["o2"].op_type == "Slice" and nodes["o2"].input[0] == "X"
    assert nodes["o3"].input[0] in ("merged", "merged_r")
    assert list(nodes["o4"].input) == ["o1", "P"]  # parameters are never constants
    assert list(nodes["o5"].input) == ["b3", "Y"]
    ops = [node.op_type for node in simplified.graph.node]
    assert "Reshape" not in ops and "Expand" not in ops and "Neg" not in ops
    assert len(simplified.graph.node) < len(original.graph.node)
