"""Emitter for `nengo_onnx.OnnxNode`: the inserted ONNX model, inlined."""
