"""The specs a user copies from specs/ (and the contract's) are clean, state their parameter
count and output with `expect`, and are what Keras 3 builds from the same layers."""

from __future__ import annotations

import os
from math import prod
from pathlib import Path

import pytest

from nnc import check
from nnc.lang.kinds import ACTIVATIONS
from nnc.lang.model import Block, Layer, Model

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.nnspec"))
CONTRACT = sorted((ROOT / "tests" / "data" / "contract").glob("*.nnspec"))
LECTURE = {"mnist_convnet", "imdb_simplernn", "imdb_lstm", "imdb_gru", "lenet5", "cifar10_convnet", "text_conv1d",
           "stacked_rnn"}


def test_specs_dir_has_the_lecture_models_and_more():
    assert LECTURE <= {p.stem for p in SPECS}


@pytest.mark.parametrize("path", SPECS + CONTRACT, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_spec_checks_clean_without_warnings(path: Path):
    result = check(str(path))
    assert result.diagnostics == [], [d.message for d in result.diagnostics]
    assert result.model.name == path.stem


@pytest.mark.parametrize("path", [p for p in SPECS if p.stem in LECTURE], ids=lambda p: p.stem)
def test_spec_states_params_and_output_and_explains_itself(path: Path):
    text = path.read_text()
    assert "expect params ==" in text and "expect output ==" in text
    assert text.startswith("#"), "a spec opens with a comment that says what it is"
    assert "Keras 3 counts" in text


def test_specs_with_non_trainable_weights_state_both_counts():
    """A spec with batchnorm tells the reader Keras's two figures, as model.summary() prints them."""
    with_frozen = [p for p in SPECS if check(str(p)).model.non_trainable_params]
    assert with_frozen, "specs/ has a batchnorm model (cifar10_mobilenet)"
    for path in with_frozen:
        text = path.read_text()
        assert "expect trainable_params ==" in text and "expect non_trainable_params ==" in text, path.name


def test_contract_specs_in_specs_are_the_contract_ones():
    """specs/ holds the lecture's models with more comments; their layers are the contract's."""
    for contract in CONTRACT:
        mine = ROOT / "specs" / contract.name
        if mine.exists():
            a, b = check(str(contract)).model, check(str(mine)).model
            assert [(l.kind, l.options, l.output_shape) for l in a.layers] == \
                   [(l.kind, l.options, l.output_shape) for l in b.layers]
            assert a.total_params == b.total_params


# --- the same models built by Keras ------------------------------------------------------------


def keras_layer(keras, layer: Layer):
    """The Keras 3 twin of an nnc layer (the `Keras twin` column of the language contract)."""
    L, o = keras.layers, layer.options
    rank = len(layer.input_shape)
    kind = layer.kind
    if kind in ("conv1d", "conv2d"):
        cls = L.Conv1D if kind == "conv1d" else L.Conv2D
        return cls(o["filters"], o["kernel"], strides=o["stride"], padding=o["padding"], activation=o["activation"],
                   use_bias=o["use_bias"], dilation_rate=o["dilation"], groups=o["groups"])
    if kind in ("separable_conv1d", "separable_conv2d"):
        cls = L.SeparableConv1D if kind == "separable_conv1d" else L.SeparableConv2D
        return cls(o["filters"], o["kernel"], strides=o["stride"], padding=o["padding"], activation=o["activation"],
                   use_bias=o["use_bias"], depth_multiplier=o["depth_multiplier"], dilation_rate=o["dilation"])
    if kind in ("depthwise_conv1d", "depthwise_conv2d"):
        cls = L.DepthwiseConv1D if kind == "depthwise_conv1d" else L.DepthwiseConv2D
        return cls(o["kernel"], strides=o["stride"], padding=o["padding"], activation=o["activation"],
                   use_bias=o["use_bias"], depth_multiplier=o["depth_multiplier"], dilation_rate=o["dilation"])
    if kind in ("conv1d_transpose", "conv2d_transpose"):
        cls = L.Conv1DTranspose if kind == "conv1d_transpose" else L.Conv2DTranspose
        return cls(o["filters"], o["kernel"], strides=o["stride"], padding=o["padding"], activation=o["activation"],
                   use_bias=o["use_bias"])
    if kind == "batchnorm":
        return L.BatchNormalization(momentum=o["momentum"], epsilon=o["epsilon"], center=o["center"], scale=o["scale"])
    if kind == "layernorm":
        return L.LayerNormalization(epsilon=o["epsilon"], center=o["center"], scale=o["scale"])
    if kind == "upsampling1d":
        return L.UpSampling1D(o["size"])
    if kind == "upsampling2d":
        return L.UpSampling2D(o["size"], interpolation=o["interpolation"])
    if kind == "attention":  # called as self-attention by keras_model
        return L.MultiHeadAttention(o["heads"], o["key_dim"], value_dim=o["value_dim"], dropout=o["dropout"],
                                    use_bias=o["use_bias"])
    if kind == "position_embedding":
        return _position_embedding(keras)(sequence_length=o["max_length"] or layer.input_shape[0])
    if kind in ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"):
        cls = {"maxpool1d": L.MaxPooling1D, "maxpool2d": L.MaxPooling2D, "avgpool1d": L.AveragePooling1D,
               "avgpool2d": L.AveragePooling2D}[kind]
        return cls(o["pool"], strides=o["stride"], padding=o["padding"])
    if kind == "globalmaxpool":
        return L.GlobalMaxPooling1D() if rank == 2 else L.GlobalMaxPooling2D()
    if kind == "globalavgpool":
        return L.GlobalAveragePooling1D() if rank == 2 else L.GlobalAveragePooling2D()
    if kind == "flatten":
        return L.Flatten()
    if kind == "dense":
        return L.Dense(o["units"], activation=o["activation"], use_bias=o["use_bias"])
    if kind == "dropout":
        return L.Dropout(o["rate"])
    if kind == "gelu_tanh":
        return L.Activation(lambda x: keras.activations.gelu(x, approximate=True))
    if kind in ACTIVATIONS:
        return L.Activation(kind)
    if kind == "embedding":
        return L.Embedding(o["vocab"], o["dim"])
    if kind in ("rnn", "lstm", "gru"):
        common = dict(return_sequences=o["return_sequences"], dropout=o["dropout"],
                      recurrent_dropout=o["recurrent_dropout"], go_backwards=o["go_backwards"])
        if kind == "rnn":
            cell = L.SimpleRNN(o["units"], activation=o["activation"], **common)
        elif kind == "lstm":
            cell = L.LSTM(o["units"], activation=o["activation"], recurrent_activation=o["recurrent_activation"],
                          **common)
        else:
            cell = L.GRU(o["units"], activation=o["activation"], recurrent_activation=o["recurrent_activation"],
                         reset_after=o["reset_after"], **common)
        return L.Bidirectional(cell, merge_mode=o["merge"]) if o["bidirectional"] else cell
    raise AssertionError(f"no Keras twin for {kind}")


def _position_embedding(keras):
    """keras_hub's PositionEmbedding where installed, else a twin with its one weight, the
    [sequence_length, features] table, whose first `steps` rows it adds to the input."""
    try:
        import keras_hub
    except ImportError:
        pass
    else:
        return keras_hub.layers.PositionEmbedding

    class PositionEmbedding(keras.layers.Layer):
        def __init__(self, sequence_length):
            super().__init__()
            self.sequence_length = sequence_length

        def build(self, input_shape):
            self.table = self.add_weight(shape=(self.sequence_length, input_shape[-1]))

        def call(self, x):
            return x + self.table[: x.shape[1]]

    return PositionEmbedding


def keras_model(keras, model: Model):
    """The layers applied in turn (an attention layer as self-attention, mha(x, x)); returns the
    Keras model and its layers in nnc's order."""
    dtype = "int32" if model.input.dtype == "int64" else "float32"
    x = inp = keras.Input(shape=model.input.shape, dtype=dtype)
    made = []
    L = keras.layers
    merges = {"add": L.Add, "residual": L.Add, "multiply": L.Multiply, "average": L.Average, "maximum": L.Maximum,
              "minimum": L.Minimum, "subtract": L.Subtract}

    def stack(nodes, x):  # blocks: each branch reads the block's input, Keras's merge layer joins them
        for node in nodes:
            if isinstance(node, Block):
                if node.kind == "repeat":
                    x = stack(node.branches[0], x)
                    continue
                outs = [stack(branch, x) for branch in node.branches]
                merge = L.Concatenate(axis=node.options["axis"]) if node.kind == "concat" else merges[node.kind]()
                x = merge(outs)
                assert (tuple(x.shape[1:]), merge.count_params()) == (node.output_shape, 0), node.name
                continue
            kl = keras_layer(keras, node)
            if node.kind == "attention":
                x = kl(x, x, use_causal_mask=node.options["causal"])
            else:
                x = kl(x)
            made.append((kl, x))
        return x

    return keras.Model(inp, stack(model.body, x)), made


@pytest.mark.reference
@pytest.mark.parametrize("path", SPECS + CONTRACT, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_keras_builds_the_same_shapes_and_counts(path: Path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    model = check(str(path)).model
    km, made = keras_model(keras, model)

    def size(weights):
        return sum(prod(w.shape) for w in weights)

    got = [(tuple(out.shape[1:]), size(kl.trainable_weights), size(kl.non_trainable_weights)) for kl, out in made]
    assert got == [(l.output_shape, l.trainable_params, l.non_trainable_params) for l in model.layers]
    assert km.count_params() == model.total_params
    assert (size(km.trainable_weights), size(km.non_trainable_weights)) == \
        (model.trainable_params, model.non_trainable_params)


def test_contract_copies_match_the_shared_contract():
    """tests/data/contract keeps the tests independent of ../shared; where ../shared is present
    (every developer's and CI's checkout), the copies must be the contract itself, and every
    contract spec there must be copied."""
    shared = ROOT.parent / "shared" / "contract"
    if not shared.is_dir():
        pytest.skip("no ../shared/contract beside this checkout")
    theirs = {p.name: p.read_bytes() for p in shared.glob("*.nnspec")}
    ours = {p.name: p.read_bytes() for p in CONTRACT}
    assert ours == theirs
