"""Exporting a compiled program as a portable ONNX model (`exporter`), and running
exported models with onnxruntime alone (`runner`: needs neither nengo nor the rest of
nengo-onnx). (Not named ``export``: that is the public function ``nengo_onnx.export``.)"""
