"""Losses: gradients against central finite differences in float64, values against PyTorch,
stability for large logits, and Keras's choice of accuracy."""

import numpy as np
import pytest

from nnc.training.losses import accuracy_kind, correct, final, loss_and_grad

# (loss, final activation) pairs: the fused ones and those computed on probabilities
CASES = [
    ("sparse_categorical_crossentropy", "softmax"),
    ("categorical_crossentropy", "softmax"),
    ("binary_crossentropy", "sigmoid"),
    ("mse", None),
    ("mse", "softmax"),
    ("mse", "sigmoid"),
    ("categorical_crossentropy", "sigmoid"),
    ("sparse_categorical_crossentropy", "sigmoid"),
    ("binary_crossentropy", "softmax"),
]


def _targets(loss, shape, rng):
    if loss == "sparse_categorical_crossentropy":
        return rng.integers(0, shape[-1], size=shape[:-1])
    if loss == "categorical_crossentropy":
        return np.eye(shape[-1])[rng.integers(0, shape[-1], size=shape[:-1])]
    if loss == "binary_crossentropy":
        return rng.integers(0, 2, size=shape).astype(np.float64)
    return rng.normal(size=shape)


@pytest.mark.parametrize("shape", [(5, 4), (3, 6, 3)])  # one output per sample, and per time step
@pytest.mark.parametrize("loss,act", CASES)
def test_gradient_matches_central_differences(loss, act, shape):
    rng = np.random.default_rng(1)
    z = rng.normal(size=shape)
    y = _targets(loss, shape, rng)
    _, dz = loss_and_grad(loss, z, y, act)
    assert dz.shape == z.shape and dz.dtype == np.float64
    h = 1e-6
    num = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[i] += h
        zm[i] -= h
        num[i] = (loss_and_grad(loss, zp, y, act, need_grad=False)[0]
                  - loss_and_grad(loss, zm, y, act, need_grad=False)[0]) / (2 * h)
    rel = np.abs(dz - num).max() / max(np.abs(num).max(), 1e-12)
    assert rel < 1e-6, f"{loss} after {act}: relative error {rel:.2e}"


def test_fused_losses_stay_finite_for_huge_logits():
    z = np.array([[1000.0, -1000.0, 0.0], [-800.0, 900.0, 5.0]], dtype=np.float32)
    v, dz = loss_and_grad("sparse_categorical_crossentropy", z, np.array([1, 1]), "softmax")
    # sample 0 is wrong by a margin of 2000: its loss is 2000 exactly, sample 1 is right (loss 0)
    assert np.isfinite(v) and abs(v - 1000.0) < 1e-3
    assert np.isfinite(dz).all()
    v, dz = loss_and_grad("binary_crossentropy", np.array([[500.0], [-500.0]]), np.array([[0.0], [0.0]]), "sigmoid")
    assert abs(v - 250.0) < 1e-9 and np.isfinite(dz).all()


@pytest.mark.reference
def test_values_match_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    z = rng.normal(size=(7, 5)) * 3
    labels = rng.integers(0, 5, size=7)
    onehot = np.eye(5)[labels]
    tz = torch.tensor(z)
    want = F.cross_entropy(tz, torch.tensor(labels)).item()
    assert loss_and_grad("sparse_categorical_crossentropy", z, labels, "softmax")[0] == pytest.approx(want, rel=1e-12)
    assert loss_and_grad("categorical_crossentropy", z, onehot, "softmax")[0] == pytest.approx(want, rel=1e-12)
    yb = rng.integers(0, 2, size=(7, 5)).astype(np.float64)
    want = F.binary_cross_entropy_with_logits(tz, torch.tensor(yb)).item()
    assert loss_and_grad("binary_crossentropy", z, yb, "sigmoid")[0] == pytest.approx(want, rel=1e-12)
    yr = rng.normal(size=(7, 5))
    want = F.mse_loss(tz, torch.tensor(yr)).item()
    assert loss_and_grad("mse", z, yr, None)[0] == pytest.approx(want, rel=1e-12)
    # the gradient PyTorch's autograd computes for the same fused loss
    tz.requires_grad_(True)
    F.cross_entropy(tz, torch.tensor(labels)).backward()
    np.testing.assert_allclose(loss_and_grad("sparse_categorical_crossentropy", z, labels, "softmax")[1],
                               tz.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.reference
def test_probability_losses_match_keras():
    pytest.importorskip("torch")
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    z = (rng.normal(size=(6, 4)) * 4).astype(np.float32)
    p = final(z, "sigmoid")
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=6)]
    want = float(keras.losses.CategoricalCrossentropy()(y, p))
    assert loss_and_grad("categorical_crossentropy", z, y, "sigmoid")[0] == pytest.approx(want, rel=1e-5)
    yb = rng.integers(0, 2, size=(6, 4)).astype(np.float32)
    ps = final(z, "softmax")
    want = float(keras.losses.BinaryCrossentropy()(yb, ps))
    assert loss_and_grad("binary_crossentropy", z, yb, "softmax")[0] == pytest.approx(want, rel=1e-5)


def test_accuracy_follows_keras_choice():
    assert accuracy_kind("sparse_categorical_crossentropy", 10) == "sparse_categorical"
    assert accuracy_kind("categorical_crossentropy", 10) == "categorical"
    assert accuracy_kind("binary_crossentropy", 3) == "binary"
    assert accuracy_kind("mse", 1) == "binary"
    z = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [5.0, 0.0, 0.0]])
    assert correct("sparse_categorical", z, np.array([0, 2, 1]), "softmax") == (2.0, 3)
    assert correct("categorical", z, np.eye(3)[[0, 0, 0]], "softmax") == (2.0, 3)
    # binary: sigmoid(z) > 0.5 per unit, averaged over the units of a sample
    assert correct("binary", np.array([[1.0, -1.0], [-2.0, -3.0]]), np.array([[1.0, 1.0], [0.0, 0.0]]),
                   "sigmoid") == (1.5, 2)
