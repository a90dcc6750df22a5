"""The language: parser, checker, kinds (one place per kind), the checked model, diagnostics, fmt.

Knows no engine, no ONNX and no training loop: nothing here imports nnc.onnx, nnc.engines,
nnc.training, nnc.tools or nnc.commands (tests/test_layout.py holds the arrows).
"""
