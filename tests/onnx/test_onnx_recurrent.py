"""The recurrent options of LANGUAGE.md's "More kinds and options" in the ONNX graph
(onnx_cases.RECURRENT_SPECS; the tests that read OPTION_SPECS compare them with NumPy and Keras
too): in every supported opset valid (onnx.checker, full check), shaped as nnc says by ONNX's own
strict shape inference, and computing nnc's NumPy forward pass (float64) on onnxruntime. And the
graph's structure: bidirectional is one operator with both directions' weights stacked,
go_backwards is direction="reverse" with the sequence put in Keras's reading order, dropout
leaves nothing, the activations the operators have are their attributes and the others are
unrolled."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, shape_inference

from nnc.engines.numpy import Network
from nnc.lang.checker import check_source
from nnc.onnx import export as ox

from onnx_cases import RECURRENT_SPECS, assert_close, option_model, ort_run, random_input, random_weights

_CASES: dict[str, tuple] = {}


def _case(name):
    if name not in _CASES:
        model = option_model(name)
        w = random_weights(model, seed=7)
        x = random_input(model, batch=2, seed=8)
        ref = Network(model, {k: v.astype(np.float64) for k, v in w.items()}).predict(x.astype(np.float64))
        _CASES[name] = (model, w, x, ref)
    return _CASES[name]


def _dims(t):
    return [d.dim_param or d.dim_value for d in t.tensor_type.shape.dim]


@pytest.mark.parametrize("opset", list(ox.SUPPORTED_OPSETS))
def test_recurrent_options_in_every_opset(opset):
    for name in RECURRENT_SPECS:
        model, w, x, ref = _case(name)
        proto = ox.to_onnx(model, w, opset)
        what = f"{name} at opset {opset}"
        onnx.checker.check_model(proto, full_check=True)
        bare = onnx.ModelProto()
        bare.CopyFrom(proto)
        del bare.graph.value_info[:]
        inferred = shape_inference.infer_shapes(bare, check_type=True, strict_mode=True, data_prop=True)
        shapes = {v.name: _dims(v.type) for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
        for layer in model.layers:
            assert shapes[layer.name] == ["batch", *layer.output_shape], (what, layer.name)
        assert_close(ort_run(proto, x), ref, rtol=1e-5, what=what)


def _model(text):
    r = check_source("model m\n" + text + "\n")
    assert r.ok, [d.message for d in r.diagnostics]
    return r.model


def _nodes(proto, op):
    return [n for n in proto.graph.node if n.op_type == op]


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("kind,op", [("rnn", "RNN"), ("lstm", "LSTM"), ("gru", "GRU")])
def test_bidirectional_is_one_operator_with_both_directions(kind, op):
    model = _model(f"input x: float32[5, 3]\n{kind} 4 bidirectional=true return_sequences=true")
    w = random_weights(model)
    proto = ox.to_onnx(model, w)
    (node,) = _nodes(proto, op)
    assert _attrs(node)["direction"] == b"bidirectional"
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    W = inits[f"{kind}_1.W"]
    assert W.shape[0] == 2
    if kind != "lstm":  # the same gate order: each direction's kernel, transposed
        np.testing.assert_array_equal(W[0], w[f"{kind}_1.forward.kernel"].T)
        np.testing.assert_array_equal(W[1], w[f"{kind}_1.backward.kernel"].T)
    assert _nodes(proto, "Concat")  # merge=concat


def test_go_backwards_is_the_reverse_direction_in_reading_order():
    model = _model("input x: float32[5, 3]\nlstm 4 go_backwards=true return_sequences=true\ngru 2 go_backwards=true")
    proto = ox.to_onnx(model, random_weights(model))
    assert [_attrs(n)["direction"] for n in proto.graph.node if n.op_type in ("LSTM", "GRU")] == [b"reverse"] * 2
    assert len(_nodes(proto, "Slice")) == 1  # only the sequence is reordered; the last state is Y_h
    # and the order matters: a forward layer with the same weights computes something else
    fwd = _model("input x: float32[5, 3]\nlstm 4 return_sequences=true\ngru 2")
    w = random_weights(model)
    x = random_input(model)
    assert not np.allclose(ort_run(proto, x), ort_run(ox.to_onnx(fwd, w), x), rtol=1e-3)


def test_dropout_leaves_nothing_in_the_graph():
    plain = _model("input x: float32[5, 3]\nlstm 4 bidirectional=true")
    noisy = _model("input x: float32[5, 3]\nlstm 4 bidirectional=true dropout=0.5 recurrent_dropout=0.5")
    w = random_weights(plain)
    a, b = ox.to_onnx(plain, w), ox.to_onnx(noisy, w)
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    assert not _nodes(b, "Dropout")
    x = random_input(plain)
    np.testing.assert_array_equal(ort_run(a, x), ort_run(b, x))


@pytest.mark.parametrize("text,unrolled", [
    ("lstm 3", False),
    ("gru 3 reset_after=false", False),
    ("rnn 3 activation=sigmoid", False),
    ("lstm 3 recurrent_activation=hard_sigmoid activation=leaky_relu", False),
    ("gru 3 activation=elu recurrent_activation=softsign", False),
    ("lstm 3 activation=gelu", True),
    ("gru 3 recurrent_activation=relu6", True),
    ("rnn 3 activation=softmax", True),
])
def test_operators_run_the_activations_onnx_has_and_the_rest_is_unrolled(text, unrolled):
    model = _model(f"input x: float32[4, 3]\n{text}")
    proto = ox.to_onnx(model, random_weights(model))
    ops = {n.op_type for n in proto.graph.node}
    assert bool(ops & {"RNN", "LSTM", "GRU"}) != unrolled
    if unrolled:
        assert sum(n.op_type == "Gather" for n in proto.graph.node) == 4  # one per step


def test_operator_activations_carry_keras_constants():
    # hard_sigmoid is relu6(x + 3) / 6 = HardSigmoid(alpha=1/6, beta=1/2); leaky_relu's slope is the
    # function's 0.2; the list repeats per direction, alphas and betas only for the functions that take them
    model = _model("input x: float32[4, 3]\nlstm 3 activation=leaky_relu recurrent_activation=hard_sigmoid "
                   "bidirectional=true\nrepeat_vector 2\nrnn 2 activation=linear")
    proto = ox.to_onnx(model, random_weights(model))
    lstm = _attrs(_nodes(proto, "LSTM")[0])
    assert lstm["activations"] == [b"HardSigmoid", b"LeakyRelu", b"LeakyRelu"] * 2
    assert lstm["activation_alpha"] == pytest.approx([1 / 6, 0.2, 0.2] * 2)
    assert lstm["activation_beta"] == pytest.approx([0.5, 0.5])
    rnn = _attrs(_nodes(proto, "RNN")[0])
    assert rnn["activations"] == [b"Affine"] and rnn["activation_alpha"] == [1.0] and rnn["activation_beta"] == [0.0]
    assert "activations" not in _attrs(_nodes(ox.to_onnx(_model("input x: float32[4, 3]\ngru 2"),
                                                           random_weights(_model("input x: float32[4, 3]\ngru 2"))),
                                              "GRU")[0])
