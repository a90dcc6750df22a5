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
from nnc.engines.numpy import KERNELS, Network
from nnc.lang.kinds import ACTIVATIONS, KINDS

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
    # conv options: dilation (im2col's per-offset path, and its strided-view path with 8
    # channels), groups, causal padding
    ("img", "conv2d 2 kernel=2 dilation=2"),
    ("img", "conv2d 3 kernel=3x2 dilation=1x2 padding=same use_bias=false"),
    ("img", "conv2d 8 kernel=1\nconv2d 2 kernel=2x2 dilation=2x1 padding=same"),
    ("img", "conv2d 4 kernel=3 groups=2 padding=same"),
    ("img", "conv2d 4 kernel=2 groups=2 dilation=2 use_bias=false activation=tanh"),
    ("seq", "conv1d 6 kernel=2 stride=2 groups=3"),
    ("seq", "conv1d 2 kernel=3 padding=causal"),
    ("seq", "conv1d 2 kernel=2 dilation=3 padding=causal"),
    ("seq", "conv1d 2 kernel=3 stride=2 padding=causal use_bias=false"),
    # more convolutions
    ("img", "depthwise_conv2d kernel=3"),
    ("img", "depthwise_conv2d kernel=2x3 stride=2 padding=same depth_multiplier=2 use_bias=false"),
    ("img", "conv2d 1 kernel=1\ndepthwise_conv2d kernel=2 depth_multiplier=3 dilation=2 padding=same"),
    ("seq", "depthwise_conv1d kernel=3 dilation=2 padding=same depth_multiplier=2 activation=relu"),
    ("img", "separable_conv2d 3 kernel=3 padding=same"),
    ("img", "separable_conv2d 2 kernel=2 dilation=2 depth_multiplier=2 activation=tanh"),
    ("seq", "separable_conv1d 2 kernel=2 stride=2 depth_multiplier=2 use_bias=false"),
    ("img", "conv2d_transpose 2 kernel=3 stride=2 padding=same"),
    ("img", "conv2d_transpose 2 kernel=2x3 stride=2x1 use_bias=false"),
    ("img", "conv2d_transpose 2 kernel=4 stride=3 padding=same activation=sigmoid"),
    ("seq", "conv1d_transpose 2 kernel=4 stride=2 padding=same"),
    ("seq", "conv1d_transpose 2 kernel=2 stride=3"),
    # upsampling, zero padding, cropping
    ("seq", "upsampling1d 3"),
    ("img", "upsampling2d 2x3"),
    ("img", "upsampling2d 2 interpolation=bilinear"),
    ("img", "upsampling2d 3x2 interpolation=bilinear\nflatten\ndense 2"),
    ("seq", "zeropad1d [1, 2]"),
    ("img", "zeropad2d [1, 0, 2, 1]"),
    ("seq", "cropping1d [2, 1]"),
    ("img", "cropping2d [1, 2, 0, 1]"),
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
    ("rnn", "rnn 2 activation=gelu return_sequences=true"),  # an activation whose derivative needs x
    ("rnn", "lstm 3"),
    ("rnn", "lstm 3 return_sequences=true"),
    ("rnn", "gru 3"),
    ("rnn", "gru 3 return_sequences=true"),
    ("rnn", "gru 3 reset_after=false"),
    ("rnn", "gru 3 reset_after=false return_sequences=true"),
    # recurrent options: bidirectional with each merge, go_backwards, activations (the general
    # cores), dropout and recurrent_dropout in training (masks fixed by the seeded rng)
    ("rnn", "lstm 2 bidirectional=true return_sequences=true"),
    ("rnn", "lstm 2 bidirectional=true merge=ave"),
    ("rnn", "gru 2 bidirectional=true merge=sum return_sequences=true"),
    ("rnn", "gru 2 bidirectional=true reset_after=false merge=mul"),
    ("rnn", "rnn 2 bidirectional=true merge=mul return_sequences=true"),
    ("rnn", "rnn 2 bidirectional=true merge=sum activation=relu"),
    ("rnn", "rnn 2 go_backwards=true return_sequences=true"),
    ("rnn", "lstm 2 go_backwards=true"),
    ("rnn", "gru 2 go_backwards=true return_sequences=true"),
    ("rnn", "lstm 2 activation=gelu recurrent_activation=hard_sigmoid return_sequences=true"),
    ("rnn", "lstm 2 activation=softmax recurrent_activation=tanh"),
    ("rnn", "gru 2 activation=silu recurrent_activation=softsign"),
    ("rnn", "gru 2 activation=log_softmax recurrent_activation=mish reset_after=false return_sequences=true"),
    ("rnn", "rnn 2 dropout=0.3 recurrent_dropout=0.4 return_sequences=true"),
    ("rnn", "lstm 2 dropout=0.3 return_sequences=true\ndense 2"),
    ("rnn", "lstm 2 dropout=0.3 recurrent_dropout=0.4"),
    ("rnn", "gru 2 dropout=0.3 recurrent_dropout=0.4 return_sequences=true"),
    ("rnn", "gru 2 recurrent_dropout=0.5 reset_after=false"),
    ("rnn", "gru 2 bidirectional=true dropout=0.3 recurrent_dropout=0.3 activation=elu"),
    # activations as layers (kernels.Activation) and as options
    *[("mat", f"{a}\ndense 2") for a in ACTIVATIONS if a not in ("relu", "sigmoid", "tanh", "softmax")],
    ("mat", "dense 3 activation=gelu"),
    ("mat", "dense 3 activation=mish\ndense 2"),
    ("seq", "conv1d 3 kernel=2 activation=log_softmax"),
    ("mat", "leaky_relu negative_slope=0.1"),
    ("mat", "elu alpha=0.5"),
    ("mat", "prelu\ndense 2"),
    # normalization: batchnorm in training (gradients through the batch statistics; inference
    # mode in test_batchnorm_inference_gradients), layernorm
    ("mat", "batchnorm\ndense 2"),
    ("img", "batchnorm center=false momentum=0.9\nflatten\ndense 2"),
    ("vec", "batchnorm scale=false epsilon=0.01"),
    ("mat", "layernorm epsilon=0.1"),
    ("img", "layernorm center=false scale=false\nflatten\ndense 2"),
    # reshaping
    ("mat", "reshape [10, 2]\ndense 2"),
    ("img", "reshape [-1, 2]"),
    ("img", "permute [3, 1, 2]\nflatten\ndense 2"),
    ("mat", "permute [2, 1]"),
    ("vec", "repeat_vector 3\ndense 2"),
    # spatial dropout: whole channels
    ("seq", "spatial_dropout1d 0.5\ndense 2"),
    ("img", "spatial_dropout2d 0.5"),
    # attention, position embeddings
    ("mat", "attention heads=2 key_dim=3"),
    ("mat", "attention heads=2 key_dim=2 value_dim=3 causal=true dropout=0.3 use_bias=false\ndense 2"),
    ("mat", "position_embedding max_length=6\ndense 2"),
]


def build(inp: str, body: str) -> nnc.Model:
    return nnc.loads(f"model t\n{FLOAT_IN[inp]}\n{body}\n")


def make_inputs(model, rng, n=3):
    if model.input.dtype == "int64":
        return rng.integers(0, model.input.vocab, size=(n,) + model.input.shape)
    return rng.normal(size=(n,) + model.input.shape)


def make_weights(model, rng):
    # random everywhere (biases too), float64 so finite differences are exact to ~1e-10;
    # variances (batchnorm's moving statistic) positive
    return {k: (np.abs(rng.normal(scale=0.5, size=s)) + 0.5 if k.endswith("moving_variance")
                else rng.normal(scale=0.5, size=s)) for k, s in model.weight_shapes().items()}


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


def check_gradients(model, seed=0, max_entries=40, training=True):
    rng = np.random.default_rng(seed)
    weights = make_weights(model, rng)
    x = make_inputs(model, rng)
    net = Network(model, weights, dtype=np.float64)  # weightless models (pools) need telling
    z = net.forward(x, training=training, rng=np.random.default_rng(7))
    R = rng.normal(size=z.shape)
    grads = net.backward(R, need_input_grad=True)
    # every trainable weight has a gradient; batchnorm's moving statistics have none
    trainable = set(model.trainable_weights())
    assert set(grads) == trainable

    def loss():  # the same dropout mask on every evaluation: a fresh rng with the same seed
        return float((net.forward(x, training=training, rng=np.random.default_rng(7)) * R).sum())

    failures = []
    targets = {k: v for k, v in weights.items() if k in trainable}
    if model.input.dtype != "int64":
        targets["<input>"] = x
    for name, arr in targets.items():
        analytic = net.input_grad if name == "<input>" else grads[name]
        assert analytic.shape == arr.shape, name
        idx = rng.choice(arr.size, size=min(arr.size, max_entries), replace=False)
        num = numeric_grad(loss, arr, idx)
        err = rel_error(analytic.flat[idx], num)
        # a gradient that is zero in exact arithmetic (attention's key bias: softmax ignores a
        # constant added to all of a query's scores) leaves both sides at rounding noise
        zero = max(np.abs(num).max(), np.abs(analytic.flat[idx]).max()) < 1e-8
        if not (err < 1e-6 or zero):
            failures.append(f"{name} {list(arr.shape)}: relative error {err:.2e}")
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("inp,body", CASES, ids=[f"{i}:{b.replace(chr(10), '/')}" for i, b in CASES])
def test_gradients_match_finite_differences(inp, body):
    check_gradients(build(inp, body))


@pytest.mark.parametrize("body", ["batchnorm\ndense 2", "batchnorm center=false scale=false"])
def test_batchnorm_inference_gradients(body):
    # inference: the moving statistics are constants, gamma and beta still get gradients
    check_gradients(build("mat", body), training=False)


def test_every_kind_has_a_kernel():
    missing = sorted(set(KINDS) - set(KERNELS))
    assert not missing, f"kinds without a NumPy kernel: {missing}"


def test_every_kind_has_a_gradient_case():
    covered = {layer.kind for inp, body in CASES for layer in build(inp, body).layers}
    assert covered >= set(KINDS), f"kinds without a gradient check: {sorted(set(KINDS) - covered)}"


def test_every_recurrent_option_has_a_gradient_case():
    # each recurrent kind with each option away from its default, and each merge
    from nnc.lang.kinds import RECURRENT_KINDS

    seen = set()
    for inp, body in CASES:
        for layer in build(inp, body).layers:
            if layer.kind in RECURRENT_KINDS:
                spec = KINDS[layer.kind]
                seen |= {(layer.kind, o.name) for o in spec.options if layer.options[o.name] != o.default}
                if layer.options["bidirectional"]:
                    seen.add(("any", "merge=" + layer.options["merge"]))
    wanted = {(k, o) for k in RECURRENT_KINDS for o in ("bidirectional", "go_backwards", "dropout", "recurrent_dropout",
                                                        "activation", "return_sequences")}
    wanted |= {(k, "recurrent_activation") for k in ("lstm", "gru")}
    wanted |= {("any", "merge=" + m) for m in ("concat", "sum", "mul", "ave")}
    assert not wanted - seen, f"recurrent options without a gradient check: {sorted(wanted - seen)}"


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


def test_default_recurrent_activations_run_on_the_fast_cores():
    # tanh/sigmoid LSTMs and GRUs keep their fused cores, with an input dropout mask in front; the
    # general cores take other activations and recurrent dropout (one mask per gate)
    from nnc.engines.numpy.kernels import _GruFast, _LstmFast

    rng = np.random.default_rng(0)
    for body, fast in [("lstm 3", True), ("gru 3 dropout=0.2 bidirectional=true", True),
                       ("lstm 3 recurrent_dropout=0.2", False), ("gru 3 recurrent_dropout=0.3 go_backwards=true", False)]:
        model = build("rnn", body)
        net = Network(model, make_weights(model, rng), dtype=np.float64)
        kernel = net.steps[0].kernel
        net.forward(make_inputs(model, rng), training=True, rng=rng)
        used = [c[0] for c in (net._caches[0][0][:2] if kernel.bidirectional else [net._caches[0][0]])]
        assert all(u == fast for u in used), body
        assert isinstance(kernel.fast, (_LstmFast, _GruFast))  # the defaults' core exists either way


def _assert_float32_throughout(model):
    """Float32 weights and inputs: a training forward, finite, and every gradient stay float32."""
    rng = np.random.default_rng(0)
    weights = {k: v.astype(np.float32) for k, v in make_weights(model, rng).items()}
    net = Network(model, weights)
    z = net.forward(make_inputs(model, rng).astype(np.float32), training=True, rng=rng)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    grads = net.backward(np.ones_like(z), need_input_grad=True)
    assert net.input_grad.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values()), {k: g.dtype for k, g in grads.items()}
    return net, rng


def test_recurrent_options_compute_in_float32():
    # the general cores, masks and merges keep float32 (the draws too)
    model = build("mat", "lstm 3 bidirectional=true dropout=0.3 recurrent_dropout=0.3 activation=gelu "
                  "return_sequences=true\ngru 2 recurrent_dropout=0.2 go_backwards=true recurrent_activation=hard_sigmoid "
                  "return_sequences=true\nrnn 2 bidirectional=true merge=ave dropout=0.2")
    _assert_float32_throughout(model)


@pytest.mark.parametrize("inp,body", [
    ("img", "conv2d 4 kernel=2 groups=2 dilation=2\ndepthwise_conv2d kernel=2 depth_multiplier=2\n"
            "separable_conv2d 3 kernel=2\nconv2d_transpose 2 kernel=3 stride=2 padding=same\n"
            "upsampling2d 2 interpolation=bilinear\nzeropad2d 1\ncropping2d 2\nupsampling2d 2"),
    ("seq", "conv1d 2 kernel=2 padding=causal\nupsampling1d 2\nzeropad1d 1\ncropping1d 2\n"
            "conv1d_transpose 2 kernel=2\ndepthwise_conv1d kernel=2\nseparable_conv1d 2 kernel=2"),
])
def test_conv_kinds_compute_in_float32(inp, body):
    model = build(inp, body)
    _assert_float32_throughout(model)


def test_float32_weights_compute_in_float32_in_the_newer_kinds():
    acts = "\n".join(a for a in ACTIVATIONS if a not in ("softmax", "log_softmax"))
    model = build("mat", f"batchnorm\nlayernorm\nprelu\nleaky_relu\nelu\n{acts}\n"
                  "attention heads=2 key_dim=3 dropout=0.2 causal=true\nposition_embedding\nspatial_dropout1d 0.2\n"
                  "reshape [5, 4]\npermute [2, 1]\nflatten\nrepeat_vector 2\nflatten\ndense 3 activation=log_softmax")
    net, rng = _assert_float32_throughout(model)
    assert all(w.dtype == np.float32 for w in net.weights.values())  # moving statistics updated in float32
    assert net.predict(make_inputs(model, rng)).dtype == np.float32


def test_erf_is_accurate_to_float64():
    # exact gelu needs erf, which numpy lacks: against math.erf (within an ulp), both dtypes
    import math

    from nnc.engines.numpy.kernels import erf

    x = np.concatenate([np.linspace(-8, 8, 4001), [0.0, -0.0, 1e-300, -1e-12, 5.99, 6.0, 40.0, -np.inf, np.inf]])
    ref = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(erf(x), ref, rtol=2e-16, atol=0)
    assert erf(x.astype(np.float32)).dtype == np.float32
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(erf(x32), [math.erf(float(v)) for v in x32], rtol=6e-8)  # float32 rounding


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
    # noise drawn before chunking (draws()): attention's and spatial dropout's masks
    ("mat", "attention heads=2 key_dim=3 dropout=0.3\nspatial_dropout1d 0.5\nlayernorm\nflatten\ndense 3"),
    # batch statistics: a model with batchnorm runs its batch whole, whatever the threads
    ("img", "conv2d 3 kernel=3\nbatchnorm\nspatial_dropout2d 0.3\nflatten\ndense 4 activation=softmax"),
    # recurrent dropout masks, one per sequence, drawn before chunking (both directions)
    ("mat", "lstm 3 bidirectional=true dropout=0.3 recurrent_dropout=0.3 return_sequences=true\n"
            "gru 2 dropout=0.2 go_backwards=true"),
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
        # a copy each: a training forward updates batchnorm's moving statistics in place
        net = Network(model, {k: v.copy() for k, v in weights.items()}, dtype=np.float64, threads=threads)
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


def test_regularization_penalty_and_gradient():
    # l1 * sum|w| + l2 * sum(w^2) over the weights each kind's regularized() names; its
    # gradient against central differences
    from nnc.training.losses import regularization

    model = build("mat", "dense 3 l1=0.1 l2=0.2\nattention heads=2 key_dim=2 l2=0.3\nlayernorm\ndense 2")
    rng = np.random.default_rng(4)
    weights = make_weights(model, rng)
    total, grads = regularization(model, weights)
    att = ("query", "key", "value", "attention_output")
    expected = (0.1 * np.abs(weights["dense_1.kernel"]).sum() + 0.2 * np.square(weights["dense_1.kernel"]).sum()
                + 0.3 * sum(np.square(weights[f"attention_1.{p}.kernel"]).sum() for p in att))
    np.testing.assert_allclose(total, expected, rtol=1e-12)
    assert set(grads) == {"dense_1.kernel"} | {f"attention_1.{p}.kernel" for p in att}
    for name, g in grads.items():
        num = numeric_grad(lambda: regularization(model, weights, need_grad=False)[0], weights[name],
                           range(weights[name].size))
        np.testing.assert_allclose(g.ravel(), num, rtol=1e-6, atol=1e-8, err_msg=name)
    assert regularization(build("vec", "dense 3"), make_weights(build("vec", "dense 3"), rng)) == (0.0, {})
