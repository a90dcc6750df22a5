"""TorchEngine's training step against the NumPy engine's (nnc.training.loop.Trainer.fit's step: Network
forward in training, nnc.training.losses.loss_and_grad, the l1/l2 penalty, backward, nnc.training.optim), step by
step on the same batches and the same rng: losses, logits, weights (batchnorm's moving statistics
too) and optimizer state agree within 1e-5 in float32, dropout included (the torch engine takes
its masks from the same draws). And inference, devices, and a CUDA run where there is a GPU."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nnc  # noqa: E402
from nnc.engines.numpy import Network  # noqa: E402
from nnc.engines.torch import TorchEngine, resolve_device  # noqa: E402
from nnc.lang.model import OptimizerConfig, TrainConfig  # noqa: E402
from nnc.lang.weights import init_weights  # noqa: E402
from nnc.training.losses import loss_and_grad  # noqa: E402
from nnc.training.losses import regularization  # noqa: E402
from nnc.training.optim import make_optimizer  # noqa: E402

# (input, body, loss, optimizer, TrainConfig extras)
CASES = {
    "convnet_dropout_sparse": (
        "float32[8, 8, 1]",
        "conv2d 4 kernel=3 activation=relu\nmaxpool2d 2\ndropout 0.3\nflatten\ndense 5 activation=softmax",
        "sparse_categorical_crossentropy", OptimizerConfig("rmsprop", 0.01), {}),
    "lstm_l2_binary": (
        "int64[6] vocab=11",
        "embedding 4 l2=0.01\nlstm 3 dropout=0.2 recurrent_dropout=0.2 return_sequences=true\ngru 3 go_backwards=true\n"
        "dense 1 activation=sigmoid l1=0.001",
        "binary_crossentropy", OptimizerConfig("adam", 0.01, clipnorm=1.0), {}),
    "batchnorm_smoothing_class_weight": (
        "float32[6]",
        # no bias before batchnorm: its gradient is zero in exact arithmetic, float32 noise in both
        "dense 8 use_bias=false\nbatchnorm\nrelu\ndense 3 activation=softmax",
        "categorical_crossentropy", OptimizerConfig("sgd", 0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        {"label_smoothing": 0.1, "class_weight": (1.0, 2.0, 0.5)}),
    "residual_huber": (
        "float32[5, 4]",
        # no attention biases: the key bias's gradient is zero in exact arithmetic, and nadam
        # would scale each engine's rounding noise in it up to a full step
        "conv1d 4 kernel=3 padding=same\nresidual {\n  layernorm\n  attention heads=2 key_dim=2 use_bias=false\n}\n"
        "flatten\ndense 2",
        "huber", OptimizerConfig("nadam", 0.01), {"huber_delta": 0.5}),
    "mae_adagrad": ("float32[4]", "dense 6 activation=tanh\ndense 2", "mae", OptimizerConfig("adagrad", 0.1), {}),
    "kl_softmax": ("float32[4]", "dense 3 activation=softmax", "kl_divergence", OptimizerConfig("adamw", 0.01), {}),
    "categorical_after_sigmoid": ("float32[4]", "dense 3 activation=sigmoid", "categorical_crossentropy",
                                  OptimizerConfig("sgd", 0.5), {}),
    "binary_after_softmax_mse": ("float32[4]", "dense 2 activation=softmax", "binary_crossentropy",
                                 OptimizerConfig("rmsprop", 0.01, momentum=0.5, clipvalue=0.05), {}),
    "mse": ("float32[3, 2]", "dense 4 activation=relu\ndense 2", "mse", OptimizerConfig("adam", 0.05), {}),
}


def _model(inp, body):
    return nnc.loads(f"model t\ninput x: {inp}\n{body}\n")


def _data(model, loss, rng, n):
    shape = (n,) + model.input.shape
    x = rng.integers(0, model.input.vocab, size=shape) if model.input.dtype == "int64" else \
        rng.normal(size=shape).astype(np.float32)
    out = model.output_shape
    if loss == "sparse_categorical_crossentropy":
        y = rng.integers(0, out[-1], size=(n,) + out[:-1])
    elif loss == "categorical_crossentropy" or loss == "kl_divergence":
        y = np.eye(out[-1], dtype=np.float32)[rng.integers(0, out[-1], size=(n,) + out[:-1])]
    elif loss == "binary_crossentropy":
        y = rng.integers(0, 2, size=(n,) + out).astype(np.float32)
    else:
        y = rng.normal(size=(n,) + out).astype(np.float32)
    return x, y


def _numpy_step(model, net, opt, cfg, xb, yb, rng):
    """Trainer.fit's step on the NumPy engine."""
    from nnc.training.losses import class_sample_weights

    z = net.forward(xb, training=True, rng=rng)
    sw = class_sample_weights(yb, cfg.class_weight) if cfg.class_weight else None
    value, dz = loss_and_grad(cfg.loss, z, yb, net.final_activation, sample_weight=sw,
                              delta=cfg.huber_delta, label_smoothing=cfg.label_smoothing)
    penalty, penalty_grads = regularization(model, net.weights)
    grads = net.backward(dz)
    for name, g in penalty_grads.items():
        grads[name] = grads[name] + g
    opt.step(net.weights, grads)
    return value + penalty, z


def _close(a, b, what, tol=1e-5):
    # relative to b's norm, or to 1e-3 for a (near) zero array
    err = np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-3)
    assert err <= tol, f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("case", list(CASES))
def test_train_steps_match_the_numpy_engine(case):
    inp, body, loss, opt_cfg, extra = CASES[case]
    model = _model(inp, body)
    cfg = TrainConfig(loss=loss, optimizer=opt_cfg, **extra)
    weights = init_weights(model, seed=1)
    net = Network(model, {k: v.copy() for k, v in weights.items()})
    opt = make_optimizer(cfg.optimizer)
    engine = TorchEngine(model, weights, cfg, device="cpu")
    assert engine.final_activation == net.final_activation
    x, y = _data(model, loss, np.random.default_rng(2), 24)
    for step in range(3):
        idx = slice(8 * step, 8 * step + 8)
        want, zn = _numpy_step(model, net, opt, cfg, x[idx], y[idx], np.random.default_rng([9, step]))
        got, zt = engine.train_step(x[idx], y[idx], np.random.default_rng([9, step]))
        assert isinstance(got, float) and zt.dtype == np.float32
        assert math.isclose(got, want, rel_tol=1e-5), (step, got, want)
        _close(zt, zn, f"z of step {step}")
        tw = engine.weights
        for k, v in net.weights.items():
            _close(tw[k], v, f"{k} after step {step}")
    ns, ts = opt.state_arrays(), engine.state_arrays()
    assert sorted(ns) == sorted(ts)
    for k in ns:
        _close(ts[k], ns[k], f"optimizer state {k}")
    _close(engine.logits(x, batch_size=7), net.logits(x), "logits")


def test_a_broken_loss_takes_no_step():
    model = _model("float32[2]", "dense 1")
    cfg = TrainConfig(loss="mse", optimizer=OptimizerConfig("sgd", 0.1))
    engine = TorchEngine(model, init_weights(model, 0), cfg)
    before = engine.weights
    value, _ = engine.train_step(np.array([[np.inf, 1.0]], np.float32), np.zeros((1, 1), np.float32), None)
    assert not math.isfinite(value)
    assert all(np.array_equal(before[k], v) for k, v in engine.weights.items())
    assert engine.opt.iterations == 0


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(nnc.UserError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():  # never a silent fallback to the CPU
        with pytest.raises(nnc.UserError, match="--device cuda: PyTorch finds no usable CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(nnc.UserError, match="no usable CUDA"):
            TorchEngine(_model("float32[2]", "dense 1"), init_weights(_model("float32[2]", "dense 1"), 0),
                        TrainConfig(loss="mse"), device="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("case", ["convnet_dropout_sparse", "lstm_l2_binary", "batchnorm_smoothing_class_weight",
                                  "residual_huber"])
def test_train_steps_on_cuda_match_the_cpu(case):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU for PyTorch here")
    inp, body, loss, opt_cfg, extra = CASES[case]
    model = _model(inp, body)
    cfg = TrainConfig(loss=loss, optimizer=opt_cfg, **extra)
    weights = init_weights(model, seed=1)
    cpu = TorchEngine(model, weights, cfg, device="cpu")
    gpu = TorchEngine(model, weights, cfg, device="cuda")
    assert all(p.device.type == "cuda" for p in gpu.net.parameters())
    assert all(b.device.type == "cuda" for b in gpu.net.buffers())
    x, y = _data(model, loss, np.random.default_rng(2), 32)
    for step in range(3):
        idx = slice(8 * step, 8 * step + 8)
        a = cpu.train_step(x[idx], y[idx], np.random.default_rng([9, step]))
        b = gpu.train_step(x[idx], y[idx], np.random.default_rng([9, step]))
        assert math.isclose(a[0], b[0], rel_tol=1e-4), (a[0], b[0])
        _close(b[1], a[1], f"z of step {step}", tol=1e-4)
    assert all(t.device.type == "cuda" for table in gpu.opt.state.values() for t in table.values())
    for k, v in cpu.weights.items():
        _close(gpu.weights[k], v, k, tol=1e-4)
    _close(gpu.logits(x, 5), cpu.logits(x, 5), "logits", tol=1e-4)


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
                                  "mse", "mae", "huber", "kl_divergence"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid", None])
def test_losses_and_their_gradients_match_nnc_losses(loss, activation):
    # float64, every loss with every final activation (fused or through the probabilities), on
    # sequence outputs [n, steps, classes], with label smoothing and per-sample weights
    from nnc.engines.torch.engine import loss_value

    rng = np.random.default_rng(6)
    z = rng.normal(scale=3.0, size=(4, 3, 5))
    if loss == "sparse_categorical_crossentropy":
        y = rng.integers(0, 5, size=(4, 3))
    elif loss in ("categorical_crossentropy", "kl_divergence"):
        y = rng.dirichlet(np.ones(5), size=(4, 3))
    else:
        y = rng.random((4, 3, 5))
    options = {"delta": 0.7, "label_smoothing": 0.0 if loss.startswith("sparse") else 0.2}
    sw = rng.random(4) + 0.5
    for weights in (None, sw):
        want, dz = loss_and_grad(loss, z, y, activation, sample_weight=weights, **options)
        zt = torch.tensor(z, requires_grad=True)
        yt = torch.tensor(y)
        value, report = loss_value(loss, zt, yt, activation, None if weights is None else torch.tensor(weights),
                                   **options)
        value.backward()
        assert math.isclose(float(report), want, rel_tol=1e-12), (float(report), want)
        assert math.isclose(float(value.detach()), want, rel_tol=1e-12)
        np.testing.assert_allclose(zt.grad.numpy(), dz, rtol=1e-9, atol=1e-15)


def test_dropout_without_an_rng_draws_on_the_device():
    # rng=None: torch's own generator (no host draws); inverted dropout, identity in inference
    model = _model("float32[400]", "dropout 0.25")
    engine = TorchEngine(model, {}, TrainConfig(loss="mse"))
    engine.net.train()
    x = torch.ones(50, 400)
    y = engine.net(x).numpy()
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.02
    np.testing.assert_array_equal(engine.logits(np.ones((3, 400), np.float32)), np.ones((3, 400)))
