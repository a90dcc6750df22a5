"""The Keras 3 twin of a checked model, built layer by layer from the contract's table in
LANGUAGE.md, with nnc's weights loaded as they are (the checkpoint layouts are Keras's).
Only the reference tests import this, after `pytest.importorskip("keras")`."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from nnc.lang.kinds import ACTIVATIONS  # noqa: E402
from nnc.lang.model import Block, Layer, Model  # noqa: E402


def keras_activation(name: str):
    """keras.activations.NAME with its defaults; gelu_tanh is gelu(approximate=True)."""
    if name == "gelu_tanh":
        return lambda x: keras.activations.gelu(x, approximate=True)
    return keras.activations.get(name)


class SelfAttention(keras.layers.Layer):
    """nnc's attention: MultiHeadAttention called as mha(x, x, use_causal_mask=causal); its
    weights are the MultiHeadAttention's, in its order."""

    def __init__(self, causal: bool, name: str, **mha):
        super().__init__(name=name)
        self.causal = causal
        self.mha = keras.layers.MultiHeadAttention(name=name, **mha)

    def call(self, x, training=None):
        return self.mha(x, x, use_causal_mask=self.causal, training=training)


class PositionEmbedding(keras.layers.Layer):
    """A learned [max_length, features] table whose first `steps` rows are added to the input,
    as keras_hub's PositionEmbedding + the add of TokenAndPositionEmbedding compute it."""

    def __init__(self, max_length: int | None, name: str):
        super().__init__(name=name)
        self.max_length = max_length

    def build(self, input_shape):
        self.embeddings = self.add_weight(shape=(self.max_length or input_shape[1], input_shape[-1]),
                                          name="embeddings")

    def call(self, x):
        return x + self.embeddings[: x.shape[1]]


def keras_layer(layer: Layer):
    L, o, name = keras.layers, layer.options, layer.name
    k = layer.kind
    if k in ("conv1d", "conv2d"):
        cls = L.Conv1D if k == "conv1d" else L.Conv2D
        return cls(o["filters"], o["kernel"], strides=o["stride"], padding=o["padding"],
                   activation=keras_activation(o["activation"]), use_bias=o["use_bias"],
                   dilation_rate=o["dilation"], groups=o["groups"], name=name)
    if k in ("separable_conv1d", "separable_conv2d"):
        cls = L.SeparableConv1D if k == "separable_conv1d" else L.SeparableConv2D
        return cls(o["filters"], o["kernel"], strides=o["stride"], padding=o["padding"],
                   depth_multiplier=o["depth_multiplier"], dilation_rate=o["dilation"],
                   activation=keras_activation(o["activation"]), use_bias=o["use_bias"], name=name)
    if k in ("depthwise_conv1d", "depthwise_conv2d"):
        cls = L.DepthwiseConv1D if k == "depthwise_conv1d" else L.DepthwiseConv2D
        return cls(o["kernel"], strides=o["stride"], padding=o["padding"], depth_multiplier=o["depth_multiplier"],
                   dilation_rate=o["dilation"], activation=keras_activation(o["activation"]),
                   use_bias=o["use_bias"], name=name)
    if k in ("conv1d_transpose", "conv2d_transpose"):
        cls = L.Conv1DTranspose if k == "conv1d_transpose" else L.Conv2DTranspose
        return cls(o["filters"], o["kernel"], strides=o["stride"], padding=o["padding"],
                   activation=keras_activation(o["activation"]), use_bias=o["use_bias"], name=name)
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
        return L.Dense(o["units"], activation=keras_activation(o["activation"]), use_bias=o["use_bias"], name=name)
    if k == "dropout":
        return L.Dropout(o["rate"], name=name)
    if k == "leaky_relu":
        return L.LeakyReLU(negative_slope=o["negative_slope"], name=name)
    if k == "elu":
        return L.ELU(alpha=o["alpha"], name=name)
    if k == "prelu":
        return L.PReLU(name=name)
    if k in ACTIVATIONS:
        return L.Activation(keras_activation(k), name=name)
    if k == "batchnorm":
        return L.BatchNormalization(momentum=o["momentum"], epsilon=o["epsilon"], center=o["center"],
                                    scale=o["scale"], name=name)
    if k == "layernorm":
        return L.LayerNormalization(epsilon=o["epsilon"], center=o["center"], scale=o["scale"], name=name)
    if k == "upsampling1d":
        return L.UpSampling1D(o["size"], name=name)
    if k == "upsampling2d":
        return L.UpSampling2D(o["size"], interpolation=o["interpolation"], name=name)
    if k in ("zeropad1d", "zeropad2d", "cropping1d", "cropping2d"):
        cls = {"zeropad1d": L.ZeroPadding1D, "zeropad2d": L.ZeroPadding2D,
               "cropping1d": L.Cropping1D, "cropping2d": L.Cropping2D}[k]
        amounts = [tuple(p) for p in o["padding" if k.startswith("zeropad") else "cropping"]]
        return cls(amounts[0] if k.endswith("1d") else tuple(amounts), name=name)
    if k == "reshape":
        return L.Reshape(o["shape"], name=name)
    if k == "permute":
        return L.Permute(o["axes"], name=name)
    if k == "repeat_vector":
        return L.RepeatVector(o["n"], name=name)
    if k in ("spatial_dropout1d", "spatial_dropout2d"):
        return (L.SpatialDropout1D if k == "spatial_dropout1d" else L.SpatialDropout2D)(o["rate"], name=name)
    if k == "attention":
        return SelfAttention(o["causal"], name, num_heads=o["heads"], key_dim=o["key_dim"], value_dim=o["value_dim"],
                             dropout=o["dropout"], use_bias=o["use_bias"])
    if k == "position_embedding":
        return PositionEmbedding(o["max_length"], name)
    if k == "embedding":
        return L.Embedding(o["vocab"], o["dim"], name=name)
    if k in ("rnn", "lstm", "gru"):
        common = dict(return_sequences=o["return_sequences"], go_backwards=o["go_backwards"], dropout=o["dropout"],
                      recurrent_dropout=o["recurrent_dropout"], activation=keras_activation(o["activation"]))
        if not o["bidirectional"]:
            common["name"] = name
        if k == "rnn":
            cell = L.SimpleRNN(o["units"], **common)
        elif k == "lstm":
            cell = L.LSTM(o["units"], recurrent_activation=keras_activation(o["recurrent_activation"]), **common)
        else:
            cell = L.GRU(o["units"], recurrent_activation=keras_activation(o["recurrent_activation"]),
                         reset_after=o["reset_after"], **common)
        if o["bidirectional"]:  # Keras's Bidirectional: weights forward.*, then backward.*
            return L.Bidirectional(cell, merge_mode=o["merge"], name=name)
        return cell
    raise AssertionError(f"no Keras twin for {k}")


def keras_merge(block: Block):
    """The Keras merge layer that joins a block's branches (LANGUAGE.md, "Blocks")."""
    L = keras.layers
    if block.merge == "concat":
        return L.Concatenate(axis=block.options.get("axis", -1), name=block.name)
    cls = {"add": L.Add, "average": L.Average, "multiply": L.Multiply, "maximum": L.Maximum,
           "minimum": L.Minimum, "subtract": L.Subtract}[block.merge]
    return cls(name=block.name)


def keras_functional(model: Model, weights: dict[str, np.ndarray]):
    """A model with blocks as a Keras functional model: every branch of a block reads the block's
    input (an empty branch is that input), the merge layer joins them; `repeat` is its body."""
    made = []

    def stack(nodes, x):
        for node in nodes:
            if isinstance(node, Block):
                outs = [stack(branch, x) for branch in node.branches]
                x = outs[0] if node.merge is None else keras_merge(node)(outs)
            else:
                kl = keras_layer(node)
                made.append((node, kl))
                x = kl(x)
        return x

    inp = keras.Input(shape=model.input.shape, dtype=model.input.dtype, name=model.input.name)
    km = keras.Model(inp, stack(model.body, inp), name=model.name)
    for layer, kl in made:
        kl.set_weights([weights[f"{layer.name}.{w}"] for w in layer.weights])
    return km


def keras_model(model: Model, weights: dict[str, np.ndarray]):
    if any(isinstance(node, Block) for node in model.body):
        return keras_functional(model, weights)
    inp = keras.Input(shape=model.input.shape, dtype=model.input.dtype, name=model.input.name)
    layers = [keras_layer(l) for l in model.layers]
    km = keras.Sequential([inp, *layers])
    for layer, kl in zip(model.layers, layers):
        kl.set_weights([weights[f"{layer.name}.{w}"] for w in layer.weights])
    return km


def keras_predict(model: Model, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    km = keras_model(model, weights)
    return np.asarray(keras.ops.convert_to_numpy(km(x, training=False)))
