"""onnxruntime's output against nnc's plain NumPy forward pass (nnc.engines.numpy, run in float64),
for every contract spec and every layer option, on random weights and inputs."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.onnx import export as ox

from onnx_cases import (CONTRACT, CONTRACT_IDS, OPTION_SPECS, assert_close, contract_model, option_model, ort_run,
                        random_input, random_weights)

from nnc.engines.numpy import Network  # noqa: E402


def numpy_reference(model, weights, x):
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}
    return Network(model, w64).predict(x if x.dtype == np.int64 else x.astype(np.float64))


def _check(model, seed=0, opset=ox.DEFAULT_OPSET, batch=3):
    w = random_weights(model, seed)
    x = random_input(model, batch=batch, seed=seed + 1)
    y = ort_run(ox.to_onnx(model, w, opset), x)
    assert y.dtype == np.float32
    assert_close(y, numpy_reference(model, w, x), rtol=1e-5, what=model.name)


@pytest.mark.parametrize("path", CONTRACT, ids=CONTRACT_IDS)
def test_contract_spec_matches_numpy(path):
    _check(contract_model(path))


@pytest.mark.parametrize("name", list(OPTION_SPECS))
def test_layer_option_matches_numpy(name):
    _check(option_model(name), seed=2)


def test_batch_is_free():
    model = option_model("conv1d_into_gru")
    proto = ox.to_onnx(model, random_weights(model))
    for batch in (1, 5):
        x = random_input(model, batch=batch)
        assert ort_run(proto, x).shape == (batch, *model.output_shape)


def test_parity_is_sensitive_to_the_gate_order():
    # The check above must be able to fail: swap Keras's f and c gates and it does.
    model = option_model("lstm")
    w = random_weights(model)
    x = random_input(model)
    u = 5
    bad = dict(w)
    k = w["lstm_1.kernel"].copy()
    k[:, u:2 * u], k[:, 2 * u:3 * u] = w["lstm_1.kernel"][:, 2 * u:3 * u], w["lstm_1.kernel"][:, u:2 * u]
    bad["lstm_1.kernel"] = k
    with pytest.raises(AssertionError):
        assert_close(ort_run(ox.to_onnx(model, bad), x), numpy_reference(model, w, x))
