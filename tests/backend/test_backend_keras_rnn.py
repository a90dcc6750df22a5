"""The recurrent options of LANGUAGE.md's "More kinds and options" in the NumPy backend against
Keras 3 (torch backend), with the same weights: bidirectional with each merge (Keras's
Bidirectional wrapper), go_backwards (Keras 3 returns the sequence in reading order), every
activation and recurrent activation of lstm and gru, and dropout / recurrent_dropout: ignored in
inference, and in training the masks nnc draws, handed to Keras's cells, give Keras's outputs
(so they apply where Keras applies them: one input mask and one state mask per sequence, one per
gate in LSTM and GRU once recurrent_dropout > 0, the same at every step)."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = [pytest.mark.reference, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

pytest.importorskip("torch")
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

import nnc  # noqa: E402
from nnc.engines.numpy import Network  # noqa: E402
from nnc.lang.kinds import ACTIVATIONS  # noqa: E402

if keras.backend.backend() != "torch":  # pragma: no cover - another test chose the backend first
    pytest.skip("these references run on Keras's torch backend", allow_module_level=True)

L = keras.layers


def keras_activation(name):
    if name == "gelu_tanh":
        return lambda x: keras.activations.gelu(x, approximate=True)
    return keras.activations.get(name)


def keras_recurrent(layer):
    o, k = layer.options, layer.kind
    common = dict(return_sequences=o["return_sequences"], go_backwards=o["go_backwards"], dropout=o["dropout"],
                  recurrent_dropout=o["recurrent_dropout"])
    if k == "rnn":
        cell = L.SimpleRNN(o["units"], activation=keras_activation(o["activation"]), **common)
    elif k == "lstm":
        cell = L.LSTM(o["units"], activation=keras_activation(o["activation"]),
                      recurrent_activation=keras_activation(o["recurrent_activation"]), **common)
    elif k == "gru":
        cell = L.GRU(o["units"], activation=keras_activation(o["activation"]),
                     recurrent_activation=keras_activation(o["recurrent_activation"]), reset_after=o["reset_after"],
                     **common)
    else:
        return L.Dense(o["units"], use_bias=o["use_bias"])
    return L.Bidirectional(cell, merge_mode=o["merge"]) if o["bidirectional"] else cell


def keras_twin(model, weights):
    inp = keras.Input(shape=model.input.shape)
    made = [keras_recurrent(layer) for layer in model.layers]
    km = keras.Sequential([inp, *made])
    for layer, kl in zip(model.layers, made):  # nnc's weights are Keras's, in Keras's order
        assert len(kl.weights) == len(layer.weights), layer.name
        kl.set_weights([weights[f"{layer.name}.{n}"] for n in layer.weights])
    return km, made


def build(body, inp="float32[5, 3]"):
    return nnc.loads(f"model m\ninput x: {inp}\n{body}\n")


def setup(model, seed=0, n=3):
    rng = np.random.default_rng(seed)
    weights = {k: rng.normal(scale=0.6, size=s).astype(np.float32) for k, s in model.weight_shapes().items()}
    x = rng.normal(size=(n,) + model.input.shape).astype(np.float32)
    return weights, x


def assert_close(ours, ref, rtol=1e-5, what=""):
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    scale = float(np.max(np.abs(ref)))
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * scale, err_msg=what)


def to_numpy(t):
    return keras.ops.convert_to_numpy(t)


# --- inference ---------------------------------------------------------------------------------

INFERENCE = [
    # bidirectional, each merge, sequences both ways
    "rnn 4 bidirectional=true return_sequences=true",
    "rnn 3 bidirectional=true merge=ave activation=relu",
    "lstm 4 bidirectional=true merge=sum return_sequences=true",
    "lstm 3 bidirectional=true merge=mul",
    "lstm 3 bidirectional=true",
    "gru 4 bidirectional=true merge=ave return_sequences=true",
    "gru 3 bidirectional=true merge=mul return_sequences=true",
    "gru 3 bidirectional=true reset_after=false",
    "lstm 3 bidirectional=true merge=concat activation=relu recurrent_activation=hard_sigmoid return_sequences=true",
    # go_backwards: the sequence comes out in reading order (its first step is the input's last)
    "rnn 4 go_backwards=true return_sequences=true",
    "rnn 4 go_backwards=true activation=gelu",
    "lstm 4 go_backwards=true return_sequences=true",
    "lstm 4 go_backwards=true",
    "gru 4 go_backwards=true return_sequences=true",
    "gru 3 go_backwards=true reset_after=false",
    # stacked: a bidirectional sequence into a backwards layer
    "gru 3 bidirectional=true merge=sum return_sequences=true\nlstm 2 go_backwards=true activation=elu",
    # dropout and recurrent_dropout are the identity in inference
    "rnn 4 dropout=0.5 recurrent_dropout=0.5 return_sequences=true",
    "lstm 4 dropout=0.4 recurrent_dropout=0.3",
    "gru 4 dropout=0.3 recurrent_dropout=0.6 return_sequences=true",
    "lstm 3 bidirectional=true dropout=0.5 recurrent_dropout=0.5 merge=ave",
]


@pytest.mark.parametrize("body", INFERENCE, ids=[b.replace("\n", "/") for b in INFERENCE])
def test_inference_matches_keras(body):
    model = build(body)
    weights, x = setup(model)
    km, _ = keras_twin(model, weights)
    ref = to_numpy(km(x, training=False))
    ours = Network(model, {k: v.astype(np.float64) for k, v in weights.items()}).predict(x.astype(np.float64))
    assert_close(ours, ref, what=body)
    # and in float32, the dtype training uses
    assert_close(Network(model, weights).predict(x), ref, rtol=2e-5, what=body + " (float32)")


BOUNDED = ("sigmoid", "hard_sigmoid", "tanh", "softsign")


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_lstm_and_gru_activations_match_keras(act):
    # each activation as lstm's and gru's activation (with a bounded recurrent activation, so
    # that the state cannot grow without bound), then as their recurrent activation (reset_after
    # both ways)
    i = ACTIVATIONS.index(act)
    b1, b2 = BOUNDED[i % len(BOUNDED)], BOUNDED[(i + 1) % len(BOUNDED)]
    for seed, body in enumerate([
            f"lstm 4 activation={act} recurrent_activation={b1} return_sequences=true\n"
            f"gru 3 activation={act} recurrent_activation={b2} return_sequences=true",
            f"lstm 4 recurrent_activation={act} return_sequences=true\n"
            f"gru 3 recurrent_activation={act} activation={b1} reset_after=false"]):
        model = build(body)
        weights, x = setup(model, seed=i + seed)
        km, _ = keras_twin(model, weights)
        ref = to_numpy(km(x, training=False))
        ours = Network(model, {k: v.astype(np.float64) for k, v in weights.items()}).predict(x.astype(np.float64))
        assert_close(ours, ref, what=body)


def test_go_backwards_reads_from_the_end_and_returns_in_reading_order():
    # a linear rnn with no recurrence and a unit kernel: each output step is one input step
    model = build("rnn 1 activation=linear go_backwards=true return_sequences=true", "float32[4, 1]")
    w = {"rnn_1.kernel": np.ones((1, 1)), "rnn_1.recurrent_kernel": np.zeros((1, 1)), "rnn_1.bias": np.zeros(1)}
    x = np.arange(1.0, 5.0).reshape(1, 4, 1)
    np.testing.assert_array_equal(Network(model, w).predict(x)[0, :, 0], [4.0, 3.0, 2.0, 1.0])
    km, _ = keras_twin(model, {k: v.astype(np.float32) for k, v in w.items()})
    np.testing.assert_array_equal(to_numpy(km(x.astype(np.float32), training=False))[0, :, 0], [4.0, 3.0, 2.0, 1.0])


# --- training: dropout masks ---------------------------------------------------------------------


class Recorder:
    """A Generator's `random`, recording what it hands out (the uniform draws of Network's protocol)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.values = []

    def random(self, shape, dtype=np.float64):
        v = self.rng.random(shape, dtype=dtype)
        self.values.append(v)
        return v


def _masks_of(layer, draws):
    """The Keras masks (for cell._dropout_mask / _recurrent_dropout_mask) of one direction from
    nnc's draws: [n, k, size] -> one [n, size] mask (k = 1) or a list of k (one per gate)."""
    out = []
    for rate in (layer.options["dropout"], layer.options["recurrent_dropout"]):
        if rate <= 0:
            out.append(None)
            continue
        u = draws.pop(0)
        m = ((u >= rate) / (1.0 - rate)).astype(np.float32)
        ms = [keras.ops.convert_to_tensor(m[:, g]) for g in range(m.shape[1])]
        out.append(ms[0] if len(ms) == 1 else ms)
    return out


def _set(cell, masks):
    if masks[0] is not None:
        cell._dropout_mask = masks[0]
    if masks[1] is not None:
        cell._recurrent_dropout_mask = masks[1]


TRAINING = [
    "rnn 4 dropout=0.4 return_sequences=true",
    "rnn 4 recurrent_dropout=0.5",
    "rnn 3 dropout=0.3 recurrent_dropout=0.5 activation=relu go_backwards=true return_sequences=true",
    # dropout alone: one mask for every gate (the fast path with the mask in front)
    "lstm 4 dropout=0.4 return_sequences=true",
    "gru 4 dropout=0.4",
    # recurrent_dropout: one mask per gate, for the input and the state
    "lstm 4 recurrent_dropout=0.4 return_sequences=true",
    "lstm 4 dropout=0.3 recurrent_dropout=0.5 activation=softsign recurrent_activation=hard_sigmoid",
    "gru 4 dropout=0.3 recurrent_dropout=0.5 return_sequences=true",
    "gru 4 recurrent_dropout=0.5 reset_after=false return_sequences=true",
    "gru 3 dropout=0.5 recurrent_dropout=0.3 reset_after=false activation=relu go_backwards=true",
    # each direction of a bidirectional layer has its own masks
    "lstm 3 bidirectional=true dropout=0.4 recurrent_dropout=0.4 merge=sum return_sequences=true",
    "gru 3 bidirectional=true dropout=0.4 merge=mul",
    "rnn 3 bidirectional=true recurrent_dropout=0.5",
]


@pytest.mark.parametrize("body", TRAINING)
def test_training_masks_match_keras(body):
    model = build(body)
    layer = model.layers[0]
    weights, x = setup(model, seed=5, n=4)
    net = Network(model, {k: v.astype(np.float64) for k, v in weights.items()})
    rec = Recorder(11)
    ours = net.forward(x.astype(np.float64), training=True, rng=rec)
    draws = list(rec.values)
    assert draws, "training with dropout draws noise"
    km, (kl,) = keras_twin(model, weights)
    if layer.options["bidirectional"]:
        _set(kl.forward_layer.cell, _masks_of(layer, draws))
        _set(kl.backward_layer.cell, _masks_of(layer, draws))
    else:
        _set(kl.cell, _masks_of(layer, draws))
    assert not draws  # every draw became a mask
    ref = to_numpy(km(x, training=True))
    assert_close(ours, ref, what=body)
    # the masks matter: inference differs
    assert not np.allclose(ours, net.predict(x.astype(np.float64)), rtol=1e-3)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_input_dropout_is_one_mask_for_every_step(kind):
    # training with dropout on the input only is inference on the input times one [batch, features]
    # mask, the same at every step
    model = build(f"{kind} 4 dropout=0.5 return_sequences=true")
    plain = build(f"{kind} 4 return_sequences=true")
    weights, x = setup(model, seed=2, n=5)
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}
    rec = Recorder(3)
    y = Network(model, w64).forward(x.astype(np.float64), training=True, rng=rec)
    (u,) = rec.values
    assert u.shape == (5, 1, 3)
    mask = (u >= 0.5) / 0.5  # [batch, 1, features]: broadcast over the steps
    np.testing.assert_allclose(y, Network(plain, w64).predict(x * mask), rtol=1e-12, atol=1e-14)


def test_recurrent_masks_are_per_gate_once_recurrent_dropout_is_set():
    # Keras's implementation 1: LSTM draws 4 input and 4 state masks, GRU 3; SimpleRNN one each
    for body, shapes in [("lstm 5 dropout=0.1 recurrent_dropout=0.2", [(6, 4, 3), (6, 4, 5)]),
                         ("gru 5 recurrent_dropout=0.2", [(6, 3, 5)]),
                         ("lstm 5 dropout=0.1", [(6, 1, 3)]),
                         ("rnn 5 dropout=0.1 recurrent_dropout=0.2", [(6, 1, 3), (6, 1, 5)]),
                         ("gru 5 bidirectional=true dropout=0.1", [(6, 1, 3), (6, 1, 3)])]:
        net = Network(build(body), {k: np.zeros(s) for k, s in build(body).weight_shapes().items()})
        kernel = net.steps[0].kernel
        assert kernel.draws(6) == shapes, body


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_bidirectional_go_backwards_is_refused_as_keras_refuses_it(kind):
    # Bidirectional builds its backward copy with go_backwards=True: with a layer that reads
    # backwards already, both copies would, and Keras refuses the pair
    with pytest.raises(ValueError, match="go_backwards"):
        L.Bidirectional(keras_recurrent(build(f"{kind} 2 go_backwards=true").layers[0]))
    from nnc.lang.checker import check_source

    r = check_source(f"model m\ninput x: float32[5, 3]\n{kind} 2 bidirectional=true go_backwards=true\n")
    assert not r.ok
    (d,) = r.diagnostics
    assert "go_backwards" in d.message and d.span.line == 3
