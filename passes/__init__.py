"""Graph passes: each a function from an operator graph to an operator graph.

`nengo_onnx.compiler.pipeline` lists them in the order they run.
"""
