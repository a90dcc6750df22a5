"""mae, huber, kl_divergence, label_smoothing and class_weight: values against Keras 3's losses,
gradients against central finite differences, and class_weight against Keras's fit itself."""

import os

import numpy as np
import pytest

from nnc.lang.checker import check_source
from nnc.lang.model import OptimizerConfig, TrainConfig
from nnc.training.data import Dataset
from nnc.training.loop import Trainer, config_from_json, config_to_json
from nnc.training.losses import class_sample_weights, final, loss_and_grad


def _keras():
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


def _targets(loss, shape, rng):
    if loss == "sparse_categorical_crossentropy":
        return rng.integers(0, shape[-1], size=shape[:-1])
    if loss in ("categorical_crossentropy", "kl_divergence"):
        onehot = np.eye(shape[-1])[rng.integers(0, shape[-1], size=shape[:-1])]
        return onehot if loss == "categorical_crossentropy" else 0.7 * onehot + 0.3 * rng.dirichlet(
            np.ones(shape[-1]), size=shape[:-1])  # soft targets for kl
    if loss == "binary_crossentropy":
        return rng.integers(0, 2, size=shape).astype(np.float64)
    return rng.normal(size=shape)


# (loss, final activation, options)
CASES = [
    ("mae", None, {}), ("mae", "sigmoid", {}), ("mae", "softmax", {}),
    ("huber", None, {}), ("huber", None, {"delta": 0.3}), ("huber", "sigmoid", {"delta": 0.2}),
    ("kl_divergence", "softmax", {}), ("kl_divergence", "sigmoid", {}),
    ("categorical_crossentropy", "softmax", {"label_smoothing": 0.1}),
    ("categorical_crossentropy", "sigmoid", {"label_smoothing": 0.2}),
    ("binary_crossentropy", "sigmoid", {"label_smoothing": 0.1}),
    ("binary_crossentropy", "softmax", {"label_smoothing": 0.3}),
]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 3)])  # one output per sample, and per time step
@pytest.mark.parametrize("loss,act,opts", CASES)
def test_gradient_matches_central_differences(loss, act, opts, shape, weighted):
    rng = np.random.default_rng(11)
    z = rng.normal(size=shape) * 1.5
    y = _targets(loss, shape, rng)
    w = rng.uniform(0.2, 3.0, size=shape[0]) if weighted else None
    _, dz = loss_and_grad(loss, z, y, act, sample_weight=w, **opts)
    assert dz.shape == z.shape and dz.dtype == np.float64
    h = 1e-6
    num = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[i] += h
        zm[i] -= h
        num[i] = (loss_and_grad(loss, zp, y, act, need_grad=False, sample_weight=w, **opts)[0]
                  - loss_and_grad(loss, zm, y, act, need_grad=False, sample_weight=w, **opts)[0]) / (2 * h)
    rel = np.abs(dz - num).max() / max(np.abs(num).max(), 1e-12)
    assert rel < 1e-6, f"{loss} after {act} {opts}: relative error {rel:.2e}"


def _keras_loss(keras, loss, opts):
    if loss == "mae":
        return keras.losses.MeanAbsoluteError()
    if loss == "huber":
        return keras.losses.Huber(**opts)
    if loss == "kl_divergence":
        return keras.losses.KLDivergence()
    if loss == "categorical_crossentropy":
        return keras.losses.CategoricalCrossentropy(**opts)
    return keras.losses.BinaryCrossentropy(**opts)


@pytest.mark.reference
@pytest.mark.parametrize("loss,act,opts", CASES)
def test_values_match_keras(loss, act, opts):
    """Keras's loss objects on the probabilities (outputs) the model gives, with and without
    sample weights (class_weight's): the weighted sum is divided by the batch size."""
    keras = _keras()
    rng = np.random.default_rng(12)
    for shape in ((6, 4), (3, 5, 4)):
        z = (rng.normal(size=shape) * 2).astype(np.float32)
        y = _targets(loss, shape, rng).astype(np.float32)
        p = final(z, act)
        w = rng.uniform(0.2, 3.0, size=shape[0]).astype(np.float32)
        keras_loss = _keras_loss(keras, loss, opts)
        want = float(keras_loss(y, p))
        assert loss_and_grad(loss, z, y, act, **opts)[0] == pytest.approx(want, rel=2e-5, abs=1e-7), shape
        kw = w if len(shape) == 2 else w[:, None]  # Keras broadcasts a sample's weight over its positions so
        want = float(keras_loss(y, p, sample_weight=kw))
        assert loss_and_grad(loss, z, y, act, sample_weight=w, **opts)[0] == pytest.approx(want, rel=2e-5, abs=1e-7)


@pytest.mark.reference
def test_gradients_match_keras_autograd():
    """The gradient with respect to z, through Keras's own activation and loss (torch autograd)."""
    keras = _keras()
    import torch

    rng = np.random.default_rng(13)
    for loss, act, opts in CASES:
        z = rng.normal(size=(6, 4)) * 1.5
        y = _targets(loss, (6, 4), rng)
        w = rng.uniform(0.2, 3.0, size=6)
        tz = torch.tensor(z, requires_grad=True)
        p = {"softmax": keras.activations.softmax, "sigmoid": keras.activations.sigmoid}.get(act, lambda t: t)(tz)
        value = _keras_loss(keras, loss, opts)(torch.tensor(y), p, sample_weight=torch.tensor(w))
        value.backward()
        ours = loss_and_grad(loss, z, y, act, sample_weight=w, **opts)[1]
        # the fused cross-entropies skip Keras's clip of probabilities to [1e-7, 1 - 1e-7]: 1e-7 apart at most
        np.testing.assert_allclose(ours, tz.grad.numpy(), rtol=1e-6, atol=3e-7, err_msg=f"{loss} {act} {opts}")


def test_label_smoothing_is_keras_formula_and_sparse_has_none():
    rng = np.random.default_rng(14)
    z = rng.normal(size=(4, 5))
    y = np.eye(5)[[0, 3, 1, 1]]
    smoothed = y * 0.8 + 0.2 / 5
    assert loss_and_grad("categorical_crossentropy", z, y, "softmax", label_smoothing=0.2)[0] == \
        pytest.approx(loss_and_grad("categorical_crossentropy", z, smoothed, "softmax")[0], rel=1e-14)
    yb = rng.integers(0, 2, size=(4, 5)).astype(float)
    assert loss_and_grad("binary_crossentropy", z, yb, "sigmoid", label_smoothing=0.2)[0] == \
        pytest.approx(loss_and_grad("binary_crossentropy", z, yb * 0.8 + 0.1, "sigmoid")[0], rel=1e-14)
    with pytest.raises(ValueError, match="label_smoothing"):
        loss_and_grad("sparse_categorical_crossentropy", z, np.array([0, 1, 2, 3]), "softmax", label_smoothing=0.1)


def test_huber_is_mse_half_inside_delta_and_mae_like_outside():
    z = np.array([[0.1, -0.2], [0.3, 0.05]])
    y = np.zeros((2, 2))
    assert loss_and_grad("huber", z, y, None, delta=1.0)[0] == pytest.approx(loss_and_grad("mse", z, y, None)[0] / 2)
    far = np.array([[10.0, -20.0]])
    assert loss_and_grad("huber", far, np.zeros((1, 2)), None, delta=2.0)[0] == pytest.approx(2.0 * (15.0 - 1.0))


@pytest.mark.reference
def test_class_sample_weights_are_keras():
    _keras()
    from keras.src.trainers.data_adapters.data_adapter_utils import class_weight_to_sample_weights

    cw = (0.5, 2.0, 3.0)
    labels = np.array([0, 2, 1, 1, 0])
    for y in (labels, np.eye(3)[labels]):
        np.testing.assert_array_equal(class_sample_weights(y, cw),
                                      class_weight_to_sample_weights(y, dict(enumerate(cw))))
    yb = np.array([[0.0], [1.0], [1.0]])
    np.testing.assert_array_equal(class_sample_weights(yb, (1.0, 4.0)),
                                  class_weight_to_sample_weights(yb, {0: 1.0, 1: 4.0}))


def test_config_round_trips_with_loss_options_and_class_weight():
    cfg = TrainConfig(loss="huber", huber_delta=2.5, label_smoothing=0.0, top_k=3, class_weight=(1.0, 5.0),
                      metrics=("mae", "mse"))
    back = config_from_json(config_to_json(cfg))
    assert back == cfg and isinstance(back.class_weight, tuple)
    # a state.npz written before these options existed still reads, with Keras's defaults
    old = config_to_json(TrainConfig())
    for key in ("huber_delta", "label_smoothing", "top_k", "class_weight"):
        del old[key]
    assert config_from_json(old) == TrainConfig()


# --- class_weight in a whole fit, against Keras's --------------------------------------------------

FIT_CASES = [
    # a softmax classifier with sparse labels, and a single sigmoid unit
    ("dense 3 activation=softmax", "sparse_categorical_crossentropy", (0.5, 2.0, 4.0), ("accuracy", "top_k_accuracy")),
    ("dense 1 activation=sigmoid", "binary_crossentropy", (1.0, 6.0), ("accuracy", "auc", "precision", "recall")),
    ("dense 3 activation=softmax", "categorical_crossentropy", (3.0, 1.0, 0.25), ("accuracy", "auc", "mae")),
]


@pytest.mark.reference
@pytest.mark.parametrize("last,loss,cw,metrics", FIT_CASES)
def test_class_weight_fit_matches_keras(tmp_path, last, loss, cw, metrics):
    """Same initial weights, no shuffling: nnc's weights and history (training loss weighted by
    class, metrics and validation not) equal Keras's fit(..., class_weight=...)."""
    keras = _keras()
    spec = f"model k\ninput x: float32[5]\ndense 6 activation=tanh\n{last}\n"
    model = check_source(spec).model
    rng = np.random.default_rng(15)
    x = rng.normal(size=(45, 5)).astype(np.float32)
    if loss == "binary_crossentropy":
        y = (x[:, :1] + 0.5 * x[:, 1:2] > 0.7).astype(np.float32)
    else:
        labels = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.6)
        y = labels if loss == "sparse_categorical_crossentropy" else np.eye(3, dtype=np.float32)[labels]
    smoothing = 0.1 if loss == "categorical_crossentropy" else 0.0
    cfg = TrainConfig(loss=loss, optimizer=OptimizerConfig("sgd", 0.2, momentum=0.5), metrics=metrics, epochs=3,
                      batch_size=8, validation_split=0.2, shuffle=False, class_weight=cw, top_k=2,
                      label_smoothing=smoothing)
    t = Trainer(model, cfg, Dataset("x", x, y), str(tmp_path / "k"), spec_source=spec)
    w0 = {k: v.copy() for k, v in t.net.weights.items()}
    t.fit()

    act = "softmax" if "softmax" in last else "sigmoid"
    km = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="tanh"),
                           keras.layers.Dense(3 if act == "softmax" else 1, activation=act)])
    km.set_weights([w0["dense_1.kernel"], w0["dense_1.bias"], w0["dense_2.kernel"], w0["dense_2.bias"]])
    keras_metrics = {"accuracy": "accuracy", "auc": keras.metrics.AUC(name="auc"),
                     "precision": keras.metrics.Precision(name="precision"),
                     "recall": keras.metrics.Recall(name="recall"), "mae": "mae",
                     "top_k_accuracy": keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top_k_accuracy")}
    keras_loss = {"sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy(),
                  "binary_crossentropy": keras.losses.BinaryCrossentropy(),
                  "categorical_crossentropy": keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)}[loss]
    km.compile(loss=keras_loss, metrics=[keras_metrics[m] for m in metrics],
               optimizer=keras.optimizers.SGD(0.2, momentum=0.5))
    h = km.fit(x, y, epochs=3, batch_size=8, validation_split=0.2, shuffle=False, verbose=0,
               class_weight=dict(enumerate(cw))).history
    assert set(t.state.history) == set(h), (sorted(t.state.history), sorted(h))
    for key in h:
        np.testing.assert_allclose(t.state.history[key], h[key], rtol=2e-4, atol=2e-6, err_msg=key)
    for ours, theirs in zip(t.net.weights.values(), km.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    # and the weighting did something: without class_weight the first epoch's loss differs
    plain = Trainer(model, TrainConfig(**{**cfg.__dict__, "class_weight": (), "epochs": 1}), Dataset("x", x, y),
                    str(tmp_path / "plain"), spec_source=spec)
    plain.fit()
    assert abs(plain.state.history["loss"][0] - t.state.history["loss"][0]) > 1e-3
    assert plain.state.history["val_loss"][0] != pytest.approx(t.state.history["val_loss"][0], rel=1e-6)
