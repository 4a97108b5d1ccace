"""Training (NengoDL's ``train`` and ``loss``) on onnxruntime-training: the training
graphs (`graph`, with the objectives' loss nodes and `tracing`), fixes for the
gradient builder (`ort_fixes`, `cleanup`), the loop (`train`) and TensorBoard
summaries (`summaries`)."""
