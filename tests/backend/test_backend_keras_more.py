"""The NumPy kernels of LANGUAGE.md's "More kinds and options" against Keras 3 (torch backend),
with the same weights: every activation function, each layer kind's forward (inference, and
training where it is deterministic), batchnorm's moving statistics, and whole training steps
(Trainer against Keras's fit: one SGD step with batchnorm; l1/l2 regularizers in the loss, the
validation loss and the step)."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.reference

pytest.importorskip("torch")
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

import nnc  # noqa: E402
from nnc.engines.numpy import Network  # noqa: E402
from nnc.engines.numpy.kernels import activate  # noqa: E402
from nnc.lang.checker import check_source  # noqa: E402
from nnc.lang.kinds import ACTIVATIONS  # noqa: E402
from nnc.lang.model import OptimizerConfig, TrainConfig  # noqa: E402
from nnc.training.data import Dataset  # noqa: E402
from nnc.training.loop import Trainer  # noqa: E402

if keras.backend.backend() != "torch":  # pragma: no cover - another test chose the backend first
    pytest.skip("these references run on Keras's torch backend", allow_module_level=True)

L = keras.layers


def keras_activation(name):
    if name == "gelu_tanh":
        return lambda x: keras.activations.gelu(x, approximate=True)
    return keras.activations.get(name)


class _SelfAttention(L.Layer):
    """mha(x, x, use_causal_mask=causal): what nnc's attention kind is."""

    def __init__(self, o, **kw):
        super().__init__(**kw)
        reg = _regularizer(o)
        self.causal = o["causal"]
        self.mha = L.MultiHeadAttention(o["heads"], o["key_dim"], value_dim=o["value_dim"], dropout=o["dropout"],
                                        use_bias=o["use_bias"], kernel_regularizer=reg)

    def call(self, x, training=None):
        return self.mha(x, x, use_causal_mask=self.causal, training=training)


class _PositionEmbedding(L.Layer):
    """keras_hub's PositionEmbedding (not a dependency here): a [max_length, features] table whose
    first `steps` rows are added to the input, as TokenAndPositionEmbedding adds them."""

    def __init__(self, max_length, **kw):
        super().__init__(**kw)
        self.max_length = max_length

    def build(self, shape):
        self.embeddings = self.add_weight(shape=(self.max_length or shape[1], shape[-1]), name="embeddings")

    def call(self, x):
        steps = x.shape[1]
        return x + keras.ops.slice(self.embeddings, (0, 0), (steps, x.shape[-1]))


def _regularizer(o):
    l1, l2 = o.get("l1", 0.0), o.get("l2", 0.0)
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


def keras_layer(layer):
    o, k = layer.options, layer.kind
    if k == "dense":
        return L.Dense(o["units"], activation=keras_activation(o["activation"]), use_bias=o["use_bias"],
                       kernel_regularizer=_regularizer(o))
    if k == "flatten":
        return L.Flatten()
    if k == "batchnorm":
        return L.BatchNormalization(momentum=o["momentum"], epsilon=o["epsilon"], center=o["center"],
                                    scale=o["scale"])
    if k == "layernorm":
        return L.LayerNormalization(epsilon=o["epsilon"], center=o["center"], scale=o["scale"])
    if k == "reshape":
        return L.Reshape(tuple(o["shape"]))
    if k == "permute":
        return L.Permute(tuple(o["axes"]))
    if k == "repeat_vector":
        return L.RepeatVector(o["n"])
    if k == "spatial_dropout1d":
        return L.SpatialDropout1D(o["rate"])
    if k == "spatial_dropout2d":
        return L.SpatialDropout2D(o["rate"])
    if k == "leaky_relu":
        return L.LeakyReLU(negative_slope=o["negative_slope"])
    if k == "elu":
        return L.ELU(alpha=o["alpha"])
    if k == "prelu":
        return L.PReLU()
    if k == "attention":
        return _SelfAttention(o)
    if k == "position_embedding":
        return _PositionEmbedding(o["max_length"])
    if k in ACTIVATIONS:
        return L.Activation(keras_activation(k))
    raise AssertionError(f"no Keras twin for {k}")


def keras_twin(model, weights):
    inp = keras.Input(shape=model.input.shape)
    x, made = inp, []
    for layer in model.layers:
        kl = keras_layer(layer)
        x = kl(x)
        made.append((layer, kl))
    km = keras.Model(inp, x)
    for layer, kl in made:
        if layer.weights:  # nnc's names are Keras's, in Keras's order
            kl.set_weights([weights[f"{layer.name}.{n}"] for n in layer.weights])
    return km


def keras_weights(model, km):
    """The Keras model's variables under nnc's checkpoint names."""
    out = {}
    for layer, kl in zip(model.layers, km.layers[1:]):
        assert len(kl.weights) == len(layer.weights), layer.name
        for name, v in zip(layer.weights, kl.weights):
            out[f"{layer.name}.{name}"] = to_numpy(v)
    return out


def random_weights(model, rng):
    out = {}
    for k, s in model.weight_shapes().items():
        w = rng.normal(scale=0.5, size=s)
        if k.endswith("moving_variance") or k.endswith("gamma"):
            w = np.abs(w) + 0.5
        out[k] = w.astype(np.float32)
    return out


def to_numpy(t):
    return keras.ops.convert_to_numpy(t)


# --- activations --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_functions_match_keras(name):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(scale=3, size=(4, 50)), np.linspace(-40, 40, 200).reshape(4, 50)],
                       axis=1).astype(np.float32)
    x[0, :4] = [0.0, -3.0, 3.0, 6.0]  # kinks of relu6 and hard_sigmoid
    ours = activate(name, x)
    assert ours.dtype == np.float32
    ref = to_numpy(keras_activation(name)(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


# --- layers -------------------------------------------------------------------------------------

LAYER_SPECS = {
    # (input, layers); each spec's forward is compared in inference, and in training where
    # `training` is set (no dropout: the outputs are deterministic)
    "norms": ("float32[4, 5]", "batchnorm momentum=0.9 epsilon=0.01\nlayernorm\nbatchnorm center=false\n"
              "layernorm scale=false epsilon=0.1"),
    "bn_image": ("float32[3, 4, 2]", "batchnorm\nflatten\ndense 3"),
    "reshaping": ("float32[4, 6]", "reshape [3, -1]\npermute [2, 1]\nflatten\nrepeat_vector 2\nreshape [2, 4, 6]\n"
                  "permute [3, 1, 2]"),
    "activation_layers": ("float32[4, 5]", "prelu\nleaky_relu\nelu\nleaky_relu negative_slope=0.05\n"
                          "elu alpha=0.4\ndense 6 activation=leaky_relu"),
    "attention": ("float32[5, 6]", "attention heads=2 key_dim=3\nattention heads=3 key_dim=2 value_dim=4 "
                  "causal=true use_bias=false"),
    "attention_dropout": ("float32[5, 6]", "attention heads=2 key_dim=3 dropout=0.4\nposition_embedding"),
    "positions": ("float32[5, 3]", "position_embedding max_length=8\ndense 4 activation=gelu\nposition_embedding"),
    "spatial_dropout": ("float32[5, 3]", "spatial_dropout1d 0.3\nreshape [5, 3, 1]\nspatial_dropout2d 0.5"),
    **{f"act_{a}": ("float32[4, 5]", f"dense 6\n{a}") for a in ACTIVATIONS},
}
TRAINING = ("norms", "bn_image", "reshaping", "activation_layers", "attention", "positions")


def _model(name):
    inp, body = LAYER_SPECS[name]
    return nnc.loads(f"model m\ninput x: {inp}\n{body}\n")


@pytest.mark.parametrize("name", list(LAYER_SPECS))
def test_layers_match_keras(name):
    model = _model(name)
    rng = np.random.default_rng(1)
    weights = random_weights(model, rng)
    x = rng.normal(size=(7,) + model.input.shape).astype(np.float32)
    km = keras_twin(model, weights)
    net = Network(model, {k: v.copy() for k, v in weights.items()})
    ref = to_numpy(km(x, training=False))
    np.testing.assert_allclose(net.predict(x), ref, rtol=1e-5, atol=1e-5)
    if name in TRAINING:
        ref = to_numpy(km(x, training=True))  # batchnorm: the batch's statistics (and updated moving ones)
        z = net.apply_final(net.forward(x, training=True, rng=np.random.default_rng(0)))
        np.testing.assert_allclose(z, ref, rtol=1e-5, atol=1e-5)
        for key, v in keras_weights(model, km).items():  # moving statistics after one training call
            np.testing.assert_allclose(net.weights[key], v, rtol=1e-6, atol=1e-6, err_msg=key)


def test_spatial_dropout_drops_whole_channels_scaled():
    for inp, body, axes in (("float32[6, 40]", "spatial_dropout1d 0.25", (1,)),
                            ("float32[3, 4, 40]", "spatial_dropout2d 0.25", (1, 2))):
        model = nnc.loads(f"model m\ninput x: {inp}\n{body}\n")
        net = Network(model, {}, dtype=np.float64)
        x = np.ones((50,) + model.input.shape)
        y = net.forward(x, training=True, rng=np.random.default_rng(0))
        assert set(np.unique(y)) == {0.0, 1 / 0.75}
        # each (sample, channel) is kept or dropped over all its steps/pixels
        assert np.all(y.min(axis=axes) == y.max(axis=axes))
        assert abs((y == 0).mean() - 0.25) < 0.03
        np.testing.assert_array_equal(net.forward(x, training=False), x)


def test_attention_dropout_acts_on_the_probabilities_in_training_only():
    # with value = identity-like projections the output rows are mixes of the inputs: in
    # training, dropout on P makes the weights of a row sum to other than 1 (kept ones scaled)
    model = nnc.loads("model m\ninput x: float32[4, 2]\nattention heads=1 key_dim=2 dropout=0.5 use_bias=false\n")
    eye = np.eye(2).reshape(2, 1, 2)
    w = {"attention_1.query.kernel": np.zeros((2, 1, 2)), "attention_1.key.kernel": np.zeros((2, 1, 2)),
         "attention_1.value.kernel": eye.copy(), "attention_1.attention_output.kernel": np.eye(2).reshape(1, 2, 2)}
    net = Network(model, w, dtype=np.float64)
    x = np.ones((200, 4, 2))  # zero queries: P = 1/4 everywhere, so y = (kept count) / 4 / (1 - 0.5)
    np.testing.assert_allclose(net.forward(x), x)
    y = net.forward(x, training=True, rng=np.random.default_rng(0))
    assert set(np.round(np.unique(y) * 2).astype(int)) <= {0, 1, 2, 3, 4}
    assert abs(y.mean() - 1.0) < 0.05 and y.std() > 0.3


# --- training steps against Keras's fit ---------------------------------------------------------


def _fit_both(spec, weights, x, y, tmp_path, lr=0.1, validation_split=0.0, weight_decay=0.0):
    """One epoch of one SGD step (batch = every training sample) in nnc's Trainer and Keras's fit."""
    model = check_source(spec).model
    n_train = len(x) - (int(round(len(x) * validation_split)) if validation_split else 0)
    cfg = TrainConfig(loss="sparse_categorical_crossentropy",
                      optimizer=OptimizerConfig("sgd", lr, weight_decay=weight_decay), epochs=1,
                      batch_size=n_train, shuffle=False, validation_split=validation_split)
    t = Trainer(model, cfg, Dataset("synthetic", x, y), str(tmp_path / "run"), spec_source=spec)
    for k in t.net.weights:
        t.net.weights[k] = weights[k].copy()
    hist = t.fit()
    km = keras_twin(model, weights)
    km.compile(optimizer=keras.optimizers.SGD(lr, weight_decay=weight_decay or None),
               loss="sparse_categorical_crossentropy")
    khist = km.fit(x, y, batch_size=n_train, epochs=1, shuffle=False, verbose=0,
                   validation_split=validation_split).history
    return model, t, hist, keras_weights(model, km), khist


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_one_sgd_step_with_batchnorm_matches_keras_fit(tmp_path, weight_decay):
    # weight decay, as the gradient step, leaves the moving statistics to their momentum update
    spec = ("model bn\ninput x: float32[6]\ndense 5\nbatchnorm momentum=0.8\nrelu\n"
            "dense 3 activation=softmax\n")
    model = check_source(spec).model
    rng = np.random.default_rng(2)
    weights = random_weights(model, rng)
    x = rng.normal(size=(24, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=24)
    model, t, hist, kw, khist = _fit_both(spec, weights, x, y, tmp_path, weight_decay=weight_decay)
    np.testing.assert_allclose(hist["loss"][0], khist["loss"][0], rtol=1e-5)
    for key in model.weight_shapes():  # trained weights, and the moving statistics of the step
        np.testing.assert_allclose(t.net.weights[key], kw[key], rtol=1e-5, atol=1e-6, err_msg=key)
    mm = "batchnorm_1.moving_mean"
    assert not np.allclose(t.net.weights[mm], weights[mm])  # they did move
    # and they are saved with the other weights
    with np.load(tmp_path / "run" / "weights.npz") as saved:
        np.testing.assert_array_equal(saved[mm], t.net.weights[mm])


def test_l1_l2_regularizers_match_keras_loss_and_step(tmp_path):
    spec = ("model reg\ninput x: float32[3, 4]\ndense 5 activation=tanh l1=0.01 l2=0.03\n"
            "attention heads=2 key_dim=2 l2=0.05\nflatten\ndense 3 activation=softmax l1=0.02\n")
    model = check_source(spec).model
    rng = np.random.default_rng(3)
    weights = random_weights(model, rng)
    x = rng.normal(size=(20, 3, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=20)
    model, t, hist, kw, khist = _fit_both(spec, weights, x, y, tmp_path, validation_split=0.25)
    np.testing.assert_allclose(hist["loss"][0], khist["loss"][0], rtol=1e-5)
    np.testing.assert_allclose(hist["val_loss"][0], khist["val_loss"][0], rtol=1e-5)
    for key in model.weight_shapes():
        np.testing.assert_allclose(t.net.weights[key], kw[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_initial_weights_follow_keras_initializers():
    # constants exactly (gamma and moving_variance ones; beta, moving_mean, biases, prelu's alpha
    # zeros); glorot_uniform's limit from Keras's fans (EinsumDense counts its einsum's input and
    # output axes): the largest |w| of a few thousand draws is within 3% of the limit
    from nnc.lang.weights import init_weights

    spec = ("model init\ninput x: float32[16, 32]\nbatchnorm\nlayernorm\nprelu\n"
            "attention heads=4 key_dim=16 value_dim=8\nposition_embedding max_length=40\n")
    model = check_source(spec).model
    ours = init_weights(model, seed=0)
    keras.utils.set_random_seed(0)
    fresh = _fresh_keras_weights(model)
    assert fresh.keys() == ours.keys()
    for key, w in ours.items():
        assert w.dtype == np.float32 and w.shape == fresh[key].shape, key
        ref = fresh[key]
        if np.all(ref == ref.flat[0]):
            np.testing.assert_array_equal(w, ref, err_msg=key)
        else:
            assert abs(np.abs(w).max() / np.abs(ref).max() - 1) < 0.03, key
            assert abs(w.mean()) < 0.1 * np.abs(ref).max(), key


def _fresh_keras_weights(model):
    """Keras's own initial values for the model's layers (no weights set)."""
    inp = keras.Input(shape=model.input.shape)
    x = inp
    for layer in model.layers:
        x = keras_layer(layer)(x)
    return keras_weights(model, keras.Model(inp, x))
