"""Every opset in the supported range, on a conv spec and on recurrent ones, checked and run
against nnc's NumPy forward pass."""

from __future__ import annotations

import onnx
import pytest

from nnc.lang.errors import UserError
from nnc.onnx import export as ox

from onnx_cases import CONTRACT, assert_close, contract_model, option_model, ort_run, random_input, random_weights

from nnc.engines.numpy import Network  # noqa: E402
import numpy as np  # noqa: E402

RECURRENT = "input x: float32[6, 3]\nrnn 4 return_sequences=true\nlstm 4 return_sequences=true\ngru 4 return_sequences=true\nglobalavgpool"


def _models():
    from nnc.lang.checker import check_source

    conv = contract_model(next(p for p in CONTRACT if p.stem == "mnist_convnet"))
    rec = check_source("model recurrent\n" + RECURRENT + "\n").model
    return [conv, rec, option_model("globalmaxpool_2d_after_conv"), option_model("rnn_linear")]


@pytest.mark.parametrize("opset", list(ox.SUPPORTED_OPSETS))
def test_opset(opset):
    for model in _models():
        w = random_weights(model)
        proto = ox.to_onnx(model, w, opset)
        assert proto.opset_import[0].version == opset
        onnx.checker.check_model(proto, full_check=True)
        x = random_input(model)
        ref = Network(model, {k: v.astype(np.float64) for k, v in w.items()}).predict(x.astype(np.float64))
        assert_close(ort_run(proto, x), ref, what=f"{model.name} at opset {opset}")


def test_range_and_default():
    assert ox.MIN_OPSET == 14 and ox.DEFAULT_OPSET == 17 and ox.DEFAULT_OPSET in ox.SUPPORTED_OPSETS
    # the default keeps the IR version old runtimes read
    m = ox.to_onnx(option_model("dense_activations"), random_weights(option_model("dense_activations")))
    assert m.ir_version == 8


@pytest.mark.parametrize("opset", [ox.MIN_OPSET - 1, ox.MAX_OPSET + 1])
def test_outside_the_range_is_refused(opset):
    model = option_model("dense_activations")
    with pytest.raises(UserError, match=f"opset {opset} is not supported: nnc writes opsets 14 to {ox.MAX_OPSET}"):
        ox.to_onnx(model, random_weights(model), opset)
