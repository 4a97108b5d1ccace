"""Shared configuration for nengo-onnx's own tests."""

import nengo

# nengo's decoder cache in the home folder can break across numpy versions;
# switching it off never changes results (nengorc does the same for nengo's suite
# when pytest runs from the project root).
nengo.rc.set("decoder_cache", "enabled", "False")

# every pipeline run in the tests checks the operator graph's invariants after each pass
from nengo_onnx.compiler import pipeline  # noqa: E402

pipeline.CHECK_INVARIANTS = True
