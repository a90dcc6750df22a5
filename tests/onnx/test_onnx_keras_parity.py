"""Independent parity: Keras 3 (backend torch) with the same weights computes what the ONNX
graph computes on onnxruntime, for every contract spec and every layer option.

Skips cleanly when Keras is not installed (`pip install -e .[reference]`); CI installs it."""

from __future__ import annotations

import os

import pytest

os.environ["KERAS_BACKEND"] = "torch"
pytest.importorskip("torch")
pytest.importorskip("keras")

from nnc.onnx import export as ox  # noqa: E402

from keras_twin import keras_predict  # noqa: E402
from onnx_cases import (CONTRACT, CONTRACT_IDS, OPTION_SPECS, assert_close, contract_model, option_model,  # noqa: E402
                        ort_run, random_input, random_weights)

# keras.ops.convert_to_numpy warns about numpy 2's copy keyword: noise from Keras, not about nnc
pytestmark = [pytest.mark.reference, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _check(model, seed):
    w = random_weights(model, seed)
    x = random_input(model, batch=3, seed=seed + 1)
    assert_close(ort_run(ox.to_onnx(model, w), x), keras_predict(model, w, x), rtol=1e-5, what=model.name)


@pytest.mark.parametrize("path", CONTRACT, ids=CONTRACT_IDS)
def test_contract_spec_matches_keras(path):
    _check(contract_model(path), seed=3)


@pytest.mark.parametrize("name", list(OPTION_SPECS))
def test_layer_option_matches_keras(name):
    _check(option_model(name), seed=4)


def test_keras_initialization_compiles_to_keras_outputs():
    # `nnc compile` without --weights: the initial weights are valid Keras weights too
    from nnc.lang.weights import init_weights

    model = contract_model(next(p for p in CONTRACT if p.stem == "imdb_lstm"))
    w = init_weights(model, 0)
    x = random_input(model)
    assert_close(ort_run(ox.to_onnx(model, w), x), keras_predict(model, w, x), what="imdb_lstm")
