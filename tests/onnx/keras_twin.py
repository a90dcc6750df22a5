"""The Keras 3 twin of a checked model, built layer by layer from the contract's table in
LANGUAGE.md, with nnc's weights loaded as they are (the checkpoint layouts are Keras's).
Only the reference tests import this, after `pytest.importorskip("keras")`."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from nnc.model import Layer, Model  # noqa: E402


def keras_layer(layer: Layer):
    L, o, name = keras.layers, layer.options, layer.name
    k = layer.kind
    if k in ("conv1d", "conv2d"):
        cls = L.Conv1D if k == "conv1d" else L.Conv2D
        return cls(o["filters"], o["kernel"], strides=o["stride"], padding=o["padding"],
                   activation=o["activation"], use_bias=o["use_bias"], name=name)
    if k in ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"):
        cls = {"maxpool1d": L.MaxPooling1D, "maxpool2d": L.MaxPooling2D,
               "avgpool1d": L.AveragePooling1D, "avgpool2d": L.AveragePooling2D}[k]
        return cls(o["pool"], strides=o["stride"], padding=o["padding"], name=name)
    if k in ("globalmaxpool", "globalavgpool"):
        two_d = len(layer.input_shape) == 3
        cls = {("globalmaxpool", False): L.GlobalMaxPooling1D, ("globalmaxpool", True): L.GlobalMaxPooling2D,
               ("globalavgpool", False): L.GlobalAveragePooling1D, ("globalavgpool", True): L.GlobalAveragePooling2D}
        return cls[k, two_d](name=name)
    if k == "flatten":
        return L.Flatten(name=name)
    if k == "dense":
        return L.Dense(o["units"], activation=o["activation"], use_bias=o["use_bias"], name=name)
    if k == "dropout":
        return L.Dropout(o["rate"], name=name)
    if k in ("relu", "sigmoid", "tanh", "softmax"):
        return L.Activation(k, name=name)
    if k == "embedding":
        return L.Embedding(o["vocab"], o["dim"], name=name)
    if k == "rnn":
        return L.SimpleRNN(o["units"], activation=o["activation"], return_sequences=o["return_sequences"], name=name)
    if k == "lstm":
        return L.LSTM(o["units"], return_sequences=o["return_sequences"], name=name)
    if k == "gru":
        return L.GRU(o["units"], return_sequences=o["return_sequences"], reset_after=o["reset_after"], name=name)
    raise AssertionError(f"no Keras twin for {k}")


def keras_model(model: Model, weights: dict[str, np.ndarray]):
    inp = keras.Input(shape=model.input.shape, dtype=model.input.dtype, name=model.input.name)
    layers = [keras_layer(l) for l in model.layers]
    km = keras.Sequential([inp, *layers])
    for layer, kl in zip(model.layers, layers):
        kl.set_weights([weights[f"{layer.name}.{w}"] for w in layer.weights])
    return km


def keras_predict(model: Model, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    km = keras_model(model, weights)
    return np.asarray(keras.ops.convert_to_numpy(km(x, training=False)))
