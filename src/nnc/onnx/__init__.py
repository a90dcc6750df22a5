"""ONNX: the export (one lowering per kind), the protobuf writer and the onnxruntime runner.

Imports nnc.lang only.
"""
