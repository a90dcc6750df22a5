"""Optimizers: steps against a hand computation, the lecture's SGD rule, Keras 3 itself, and
PyTorch where both define the same update."""

import math
import os

import numpy as np
import pytest

from nnc.lang.model import OptimizerConfig
from nnc.training.optim import make_optimizer

GRADS = [np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.3, -0.2]), np.array([-0.4, 0.0, 1.5])]
W0 = np.array([1.0, -2.0, 0.5])


def _run(cfg, grads=GRADS, w0=W0):
    opt = make_optimizer(cfg)
    w = {"w": w0.copy()}
    out = []
    for g in grads:
        opt.step(w, {"w": g})
        out.append(w["w"].copy())
    return out, opt


def test_sgd_plain_and_momentum_by_hand():
    out, _ = _run(OptimizerConfig("sgd", lr=0.1))
    np.testing.assert_allclose(out[0], W0 - 0.1 * GRADS[0], rtol=0, atol=1e-15)
    out, _ = _run(OptimizerConfig("sgd", lr=0.1, momentum=0.9))
    v1 = -0.1 * GRADS[0]
    v2 = 0.9 * v1 - 0.1 * GRADS[1]
    np.testing.assert_allclose(out[1], W0 + v1 + v2, rtol=0, atol=1e-15)


def test_sgd_with_weight_decay_is_the_lecture_rule():
    """w <- w - eta dE/dw + alpha (previous step) - lambda eta w: previous step = the velocity."""
    eta, alpha, lam = 0.05, 0.9, 0.01
    out, _ = _run(OptimizerConfig("sgd", lr=eta, momentum=alpha, weight_decay=lam))
    w, prev = W0.copy(), np.zeros(3)
    for g, got in zip(GRADS, out):
        step = -eta * g + alpha * prev
        w = w - eta * g + alpha * prev - lam * eta * w
        prev = step
        np.testing.assert_allclose(got, w, rtol=1e-14)


def test_sgd_nesterov_by_hand():
    out, _ = _run(OptimizerConfig("sgd", lr=0.1, momentum=0.5, nesterov=True))
    v1 = -0.1 * GRADS[0]
    w1 = W0 + 0.5 * v1 - 0.1 * GRADS[0]
    v2 = 0.5 * v1 - 0.1 * GRADS[1]
    np.testing.assert_allclose(out[1], w1 + 0.5 * v2 - 0.1 * GRADS[1], rtol=1e-14)


def test_rmsprop_by_hand():
    out, _ = _run(OptimizerConfig("rmsprop", lr=0.01, rho=0.9))
    s1 = 0.1 * GRADS[0] ** 2
    w1 = W0 - 0.01 * GRADS[0] / np.sqrt(s1 + 1e-7)  # Keras: epsilon inside the root
    s2 = 0.9 * s1 + 0.1 * GRADS[1] ** 2
    np.testing.assert_allclose(out[1], w1 - 0.01 * GRADS[1] / np.sqrt(s2 + 1e-7), rtol=1e-14)


def test_adam_by_hand():
    out, opt = _run(OptimizerConfig("adam", lr=0.01))
    m = v = np.zeros(3)
    w = W0.copy()
    for t, g in enumerate(GRADS, start=1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.01 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-7)
        np.testing.assert_allclose(out[t - 1], w, rtol=1e-14)
    assert opt.iterations == 3


def test_state_round_trip_continues_identically():
    cfg = OptimizerConfig("adam", lr=0.01, weight_decay=0.1)
    full, _ = _run(cfg)
    first, opt = _run(cfg, GRADS[:1])
    again = make_optimizer(cfg)
    again.load_state(opt.state_arrays(), opt.iterations)
    w = {"w": first[-1].copy()}
    for g in GRADS[1:]:
        again.step(w, {"w": g})
    assert np.array_equal(w["w"], full[-1])


KERAS_CASES = [
    ("sgd", dict(lr=0.1), dict(learning_rate=0.1)),
    ("sgd", dict(lr=0.05, momentum=0.9, weight_decay=0.01), dict(learning_rate=0.05, momentum=0.9, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.8, nesterov=True), dict(learning_rate=0.05, momentum=0.8, nesterov=True)),
    ("rmsprop", dict(lr=0.01), dict(learning_rate=0.01)),
    ("rmsprop", dict(lr=0.01, rho=0.8, momentum=0.5, weight_decay=0.02),
     dict(learning_rate=0.01, rho=0.8, momentum=0.5, weight_decay=0.02)),
    ("adam", dict(lr=0.01), dict(learning_rate=0.01)),
    ("adam", dict(lr=0.02, beta_1=0.8, beta_2=0.99, weight_decay=0.05),
     dict(learning_rate=0.02, beta_1=0.8, beta_2=0.99, weight_decay=0.05)),
]


@pytest.mark.reference
@pytest.mark.parametrize("name,ours,theirs", KERAS_CASES)
def test_steps_match_keras(name, ours, theirs):
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    opt = {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam}[name](**theirs)
    var = keras.Variable(W0.astype(np.float32))
    grads = [g.astype(np.float32) for g in GRADS]
    out, _ = _run(OptimizerConfig(name, **ours), grads, W0.astype(np.float32))
    for g, got in zip(grads, out):
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
        np.testing.assert_allclose(got, np.asarray(var.numpy()), rtol=2e-6, atol=1e-7)


@pytest.mark.reference
@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_steps_match_pytorch(name):
    """PyTorch and Keras share these updates without weight decay. They place epsilon
    differently (see nnc.training.optim), so the comparison sets epsilon = 0 where it would matter."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    w0 = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) for _ in range(5)]
    tw = torch.tensor(w0.copy(), requires_grad=True)
    if name == "sgd":
        cfg = OptimizerConfig("sgd", lr=0.05, momentum=0.9)
        topt = torch.optim.SGD([tw], lr=0.05, momentum=0.9)
    elif name == "rmsprop":
        cfg = OptimizerConfig("rmsprop", lr=0.01, rho=0.9, epsilon=0.0)
        topt = torch.optim.RMSprop([tw], lr=0.01, alpha=0.9, eps=0.0)
    else:
        cfg = OptimizerConfig("adam", lr=0.01, epsilon=0.0)
        topt = torch.optim.Adam([tw], lr=0.01, betas=(0.9, 0.999), eps=0.0)
    out, _ = _run(cfg, grads, w0)
    for g, got in zip(grads, out):
        tw.grad = torch.tensor(g)
        topt.step()
        np.testing.assert_allclose(got, tw.detach().numpy(), rtol=1e-12, atol=1e-14)
