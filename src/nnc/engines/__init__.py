"""The engines that run a checked model: numpy/ (the reference: kernels, network) and torch/ (modules).

Each has one function or builder per kind and per merge. An engine imports nnc.lang and the
training rules it applies (nnc.training's losses, optimizers, schedules), never another engine
and never nnc.onnx.
"""
