"""Every kernel's backward against central finite differences of its forward, in float64.

Each case is a small spec: the layer under test (with one option setting) and, where its output
must not be the model's last step, a dense layer after it. The loss is sum(z * R) for a fixed
random R, so every output element carries its own weight; the analytic gradients of every
weight array and of the input must match the numerical ones within a relative error of 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.backend import KERNELS, Network
from nnc.kinds import KINDS

FLOAT_IN = {
    "img": "input x: float32[7, 6, 2]",
    "seq": "input x: float32[9, 3]",
    "rnn": "input x: float32[4, 3]",
    "vec": "input x: float32[5]",
    "mat": "input x: float32[4, 5]",
    "ids": "input x: int64[5] vocab=7",
}

# (input, layer lines)
CASES = [
    # conv2d: valid/same, strides, rectangular and even kernels, use_bias, activations
    ("img", "conv2d 3 kernel=3"),
    ("img", "conv2d 3 kernel=2x3 stride=2 padding=same activation=tanh"),
    ("img", "conv2d 3 kernel=4 stride=2 padding=same use_bias=false"),
    ("img", "conv2d 2 kernel=2 stride=2 padding=same activation=relu"),
    ("img", "conv2d 2 kernel=3x2 stride=2x1 activation=sigmoid"),
    ("img", "conv2d 2 kernel=3 padding=same\nflatten\ndense 2"),
    ("seq", "conv1d 4 kernel=3"),
    ("seq", "conv1d 4 kernel=4 stride=2 padding=same"),
    ("seq", "conv1d 2 kernel=2 stride=3 use_bias=false activation=relu"),
    ("seq", "conv1d 2 kernel=3 padding=same activation=softmax\ndense 2"),
    # pools
    ("img", "maxpool2d 2"),
    ("img", "maxpool2d 2 padding=same"),
    ("img", "maxpool2d 3 stride=2 padding=same"),
    ("img", "maxpool2d 2x3 stride=1"),
    ("img", "avgpool2d 2"),
    ("img", "avgpool2d 2 padding=same"),
    ("img", "avgpool2d 3 stride=2 padding=same"),
    ("img", "avgpool2d 4x2 stride=1x2 padding=same"),
    ("seq", "maxpool1d 2"),
    ("seq", "maxpool1d 4 stride=3 padding=same"),
    ("seq", "avgpool1d 2 stride=1"),
    ("seq", "avgpool1d 4 stride=2 padding=same"),
    ("img", "globalmaxpool"),
    ("seq", "globalmaxpool"),
    ("img", "globalavgpool"),
    ("seq", "globalavgpool"),
    # dense stack
    ("img", "flatten\ndense 3"),
    ("vec", "dense 3"),
    ("vec", "dense 3 use_bias=false activation=tanh"),
    ("mat", "dense 3 activation=relu"),
    ("mat", "dense 3 activation=sigmoid use_bias=false"),
    ("vec", "dense 4 activation=softmax\ndense 2"),
    ("vec", "dense 4\ndropout 0.5\ndense 2"),
    ("vec", "relu\ndense 2"),
    ("mat", "sigmoid\ndense 2"),
    ("vec", "tanh\ndense 2"),
    ("mat", "softmax\ndense 2"),
    # sequences
    ("ids", "embedding 3\ndense 2"),
    ("ids", "embedding 4\nlstm 3 return_sequences=true\ngru 2"),
    ("rnn", "rnn 3"),
    ("rnn", "rnn 3 activation=relu return_sequences=true"),
    ("rnn", "rnn 2 activation=sigmoid"),
    ("rnn", "rnn 2 activation=linear return_sequences=true"),
    ("rnn", "rnn 2 activation=softmax"),
    ("rnn", "lstm 3"),
    ("rnn", "lstm 3 return_sequences=true"),
    ("rnn", "gru 3"),
    ("rnn", "gru 3 return_sequences=true"),
    ("rnn", "gru 3 reset_after=false"),
    ("rnn", "gru 3 reset_after=false return_sequences=true"),
]


def build(inp: str, body: str) -> nnc.Model:
    return nnc.loads(f"model t\n{FLOAT_IN[inp]}\n{body}\n")


def make_inputs(model, rng, n=3):
    if model.input.dtype == "int64":
        return rng.integers(0, model.input.vocab, size=(n,) + model.input.shape)
    return rng.normal(size=(n,) + model.input.shape)


def make_weights(model, rng):
    # random everywhere (biases too), float64 so finite differences are exact to ~1e-10
    return {k: rng.normal(scale=0.5, size=s) for k, s in model.weight_shapes().items()}


def rel_error(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-30)


def numeric_grad(f, arr, idx, eps=1e-6):
    out = []
    for i in idx:
        old = arr.flat[i]
        arr.flat[i] = old + eps
        up = f()
        arr.flat[i] = old - eps
        down = f()
        arr.flat[i] = old
        out.append((up - down) / (2 * eps))
    return np.array(out)


def check_gradients(model, seed=0, max_entries=40):
    rng = np.random.default_rng(seed)
    weights = make_weights(model, rng)
    x = make_inputs(model, rng)
    net = Network(model, weights, dtype=np.float64)  # weightless models (pools) need telling
    z = net.forward(x, training=True, rng=np.random.default_rng(7))
    R = rng.normal(size=z.shape)
    grads = net.backward(R, need_input_grad=True)
    assert set(grads) == set(weights)

    def loss():  # the same dropout mask on every evaluation: a fresh rng with the same seed
        return float((net.forward(x, training=True, rng=np.random.default_rng(7)) * R).sum())

    failures = []
    targets = dict(weights)
    if model.input.dtype != "int64":
        targets["<input>"] = x
    for name, arr in targets.items():
        analytic = net.input_grad if name == "<input>" else grads[name]
        assert analytic.shape == arr.shape, name
        idx = rng.choice(arr.size, size=min(arr.size, max_entries), replace=False)
        num = numeric_grad(loss, arr, idx)
        err = rel_error(analytic.flat[idx], num)
        if not err < 1e-6:
            failures.append(f"{name} {list(arr.shape)}: relative error {err:.2e}")
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("inp,body", CASES, ids=[f"{i}:{b.replace(chr(10), '/')}" for i, b in CASES])
def test_gradients_match_finite_differences(inp, body):
    check_gradients(build(inp, body))


def test_every_kind_has_a_kernel():
    missing = sorted(set(KINDS) - set(KERNELS))
    assert not missing, f"kinds without a NumPy kernel: {missing}"


def test_every_kind_has_a_gradient_case():
    covered = {layer.kind for inp, body in CASES for layer in build(inp, body).layers}
    assert covered >= set(KINDS), f"kinds without a gradient check: {sorted(set(KINDS) - covered)}"


def test_final_activation_is_left_to_the_loss_and_applied_by_predict():
    rng = np.random.default_rng(1)
    for act, ref in [("softmax", lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)),
                     ("sigmoid", lambda z: 1 / (1 + np.exp(-z)))]:
        for body in (f"dense 3 activation={act}", f"dense 3\n{act}"):
            model = build("vec", body)
            net = Network(model, make_weights(model, rng))
            assert net.final_activation == act
            x = make_inputs(model, rng, n=5)
            z = net.forward(x)
            np.testing.assert_allclose(net.predict(x, batch_size=2), ref(z), rtol=1e-12)
    model = build("vec", "dense 3 activation=relu")
    assert Network(model, make_weights(model, rng)).final_activation is None


def test_dropout_is_inverted_and_only_in_training():
    model = build("mat", "dropout 0.25")
    net = Network(model, {}, dtype=np.float64)
    x = np.ones((200, 4, 5))
    np.testing.assert_array_equal(net.forward(x, training=False), x)
    np.testing.assert_array_equal(net.predict(x), x)
    y = net.forward(x, training=True, rng=np.random.default_rng(0))
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.02


def test_float32_weights_compute_in_float32():
    model = build("ids", "embedding 4\nlstm 3 return_sequences=true\ngru 2\ndense 1 activation=sigmoid")
    rng = np.random.default_rng(0)
    weights = {k: v.astype(np.float32) for k, v in make_weights(model, rng).items()}
    net = Network(model, weights)
    z = net.forward(make_inputs(model, rng), training=True, rng=rng)
    assert z.dtype == np.float32
    grads = net.backward(np.ones_like(z))
    assert all(g.dtype == np.float32 for g in grads.values()), {k: g.dtype for k, g in grads.items()}


def test_embedding_refuses_out_of_range_ids():
    model = build("ids", "embedding 3")
    net = Network(model, make_weights(model, np.random.default_rng(0)))
    with pytest.raises(nnc.UserError, match="vocab=7"):
        net.predict(np.array([[0, 1, 2, 3, 7]]))


@pytest.mark.parametrize("body,first", [
    # windows that tile the input: the top-left element of each 2x2 block
    ("maxpool2d 2", [(0, 0), (0, 2), (2, 0), (2, 2)]),
    # overlapping windows (stride 1): window (i, j) starts at (i, j), its first element
    ("maxpool2d 2 stride=1", [(i, j) for i in range(3) for j in range(3)]),
])
def test_maxpool_gives_a_tied_window_gradient_to_its_first_maximum(body, first):
    # a flat input has its maximum everywhere; TensorFlow and PyTorch pick the first in each window
    model = nnc.loads(f"model t\ninput x: float32[4, 4, 1]\n{body}\n")
    net = Network(model, {}, dtype=np.float64)
    z = net.forward(np.ones((1, 4, 4, 1)))
    net.backward(np.ones_like(z), need_input_grad=True)
    expected = np.zeros((1, 4, 4, 1))
    for i, j in first:
        expected[0, i, j, 0] += 1
    np.testing.assert_array_equal(net.input_grad, expected)


@pytest.mark.parametrize("inp,body", [
    ("img", "conv2d 3 kernel=3 activation=relu\nmaxpool2d 2\ndropout 0.3\nflatten\ndense 4 activation=softmax"),
    ("ids", "embedding 4\nlstm 3 return_sequences=true\ndropout 0.2\ngru 2\ndense 1 activation=sigmoid"),
])
def test_batch_chunks_in_threads_give_the_whole_batch_results(inp, body):
    # the batch is cut into one chunk per thread and the chunks' gradients summed: outputs,
    # gradients and dropout masks must be those of the batch run whole
    model = build(inp, body)
    rng = np.random.default_rng(3)
    weights = make_weights(model, rng)
    x = make_inputs(model, rng, n=48)  # 3 chunks of 16 with threads=3
    R = rng.normal(size=(48,) + model.output_shape)
    results = []
    for threads in (1, 2, 3):
        net = Network(model, weights, dtype=np.float64, threads=threads)
        z = net.forward(x, training=True, rng=np.random.default_rng(5))
        results.append((z, net.backward(R, need_input_grad=True), net.input_grad, net.predict(x, batch_size=33)))
    z1, g1, d1, p1 = results[0]
    for z, g, d, p in results[1:]:
        np.testing.assert_allclose(z, z1, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(p, p1, rtol=1e-12, atol=1e-14)
        for k in g1:
            np.testing.assert_allclose(g[k], g1[k], rtol=1e-10, atol=1e-12, err_msg=k)
        if d1 is not None:
            np.testing.assert_allclose(d, d1, rtol=1e-12, atol=1e-14)
