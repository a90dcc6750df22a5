"""The specs a user copies from specs/ (and the contract's) are clean, state their parameter
count and output with `expect`, and are what Keras 3 builds from the same layers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nnc import check
from nnc.model import Layer, Model

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
                   use_bias=o["use_bias"])
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
    if kind in ("relu", "sigmoid", "tanh", "softmax"):
        return L.Activation(kind)
    if kind == "embedding":
        return L.Embedding(o["vocab"], o["dim"])
    if kind == "rnn":
        return L.SimpleRNN(o["units"], activation=o["activation"], return_sequences=o["return_sequences"])
    if kind == "lstm":
        return L.LSTM(o["units"], return_sequences=o["return_sequences"])
    if kind == "gru":
        return L.GRU(o["units"], return_sequences=o["return_sequences"], reset_after=o["reset_after"])
    raise AssertionError(f"no Keras twin for {kind}")


def keras_model(keras, model: Model):
    dtype = "int32" if model.input.dtype == "int64" else "float32"
    return keras.Sequential([keras.Input(shape=model.input.shape, dtype=dtype)] +
                            [keras_layer(keras, layer) for layer in model.layers])


@pytest.mark.reference
@pytest.mark.parametrize("path", SPECS + CONTRACT, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_keras_builds_the_same_shapes_and_counts(path: Path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    model = check(str(path)).model
    km = keras_model(keras, model)
    got = [(tuple(l.output.shape[1:]), l.count_params()) for l in km.layers]
    assert got == [(l.output_shape, l.params) for l in model.layers]
    assert km.count_params() == model.total_params


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
