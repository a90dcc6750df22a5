"""The training loop: determinism, Keras's split, exact resume after an interrupt or a kill,
early stopping, and parity with Keras's fit() for the same initial weights."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from nnc.lang.checker import check_source
from nnc.lang.errors import UserError
from nnc.lang.model import EarlyStopping, OptimizerConfig, TrainConfig
from nnc.training.data import Dataset
from nnc.training.loop import Trainer, read_state, validation_split_at

SPEC = """model small
input x: float32[6]
dense 8 activation=tanh
dropout 0.3
dense 3 activation=softmax
"""


def _setup(n=70, seed=0):
    model = check_source(SPEC).model
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return model, Dataset("synthetic", x, y)


CFG = TrainConfig(loss="sparse_categorical_crossentropy", optimizer=OptimizerConfig("adam", 0.01),
                  metrics=("accuracy",), epochs=4, batch_size=16, validation_split=0.2, seed=3)


def _train(tmp_path, cfg=CFG, name="run", **kw):
    model, data = _setup()
    t = Trainer(model, cfg, data, str(tmp_path / name), spec_source=SPEC, **kw)
    t.fit()
    return t


def test_same_seed_gives_bit_identical_weights(tmp_path):
    a, b = _train(tmp_path, name="a"), _train(tmp_path, name="b")
    for k in a.net.weights:
        assert np.array_equal(a.net.weights[k], b.net.weights[k]), k
    c = _train(tmp_path, TrainConfig(**{**CFG.__dict__, "seed": 4}), name="c")
    assert not np.array_equal(a.net.weights["dense_1.kernel"], c.net.weights["dense_1.kernel"])
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert set(hist) == {"schema_version", "loss", "accuracy", "val_loss", "val_accuracy"} and len(hist["loss"]) == 4
    assert hist["loss"][-1] < hist["loss"][0]


def test_validation_is_the_last_fraction():
    model, data = _setup(n=70)
    t = Trainer(model, CFG, data, "/nonexistent", spec_source=SPEC)
    # floor(70 * 0.8) = 56 samples train, the last 14 validate
    assert validation_split_at(70, 0.2) == 56
    assert np.array_equal(t.x_val, data.x_train[56:]) and np.array_equal(t.x, data.x_train[:56])
    with pytest.raises(UserError, match="leaves no training samples"):
        validation_split_at(1, 0.5)


@pytest.mark.reference
def test_validation_split_matches_keras():
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("keras")
    from keras.src.trainers.data_adapters.array_slicing import train_validation_split

    for n, split in ((70, 0.2), (1437, 0.1), (33, 0.35)):
        x = np.arange(n)
        (train, _), (val, _) = train_validation_split((x, x), validation_split=split)
        assert validation_split_at(n, split) == len(train)
        assert np.array_equal(np.asarray(val), x[len(train):])


class Stop(KeyboardInterrupt):
    pass


def test_interrupted_mid_epoch_then_resumed_equals_uninterrupted(tmp_path):
    full = _train(tmp_path, name="full")

    def interrupt(epoch, step):
        if epoch == 2 and step == 1:
            raise Stop()

    model, data = _setup()
    out = str(tmp_path / "cut")
    t = Trainer(model, CFG, data, out, spec_source=SPEC, on_step=interrupt)
    with pytest.raises(Stop):
        t.fit()
    arrays, meta = read_state(out)
    assert meta["epoch"] == 2  # epochs 1 and 2 checkpointed, epoch 3 lost half-way
    resumed = Trainer(model, CFG, data, out, spec_source=SPEC)
    resumed.restore(arrays, meta)
    resumed.fit()
    for k in full.net.weights:
        assert np.array_equal(full.net.weights[k], resumed.net.weights[k]), k
    assert json.loads((tmp_path / "cut" / "history.json").read_text()) == \
        json.loads((tmp_path / "full" / "history.json").read_text())


def test_resume_refuses_other_spec_or_data(tmp_path):
    _train(tmp_path, name="r")
    arrays, meta = read_state(str(tmp_path / "r"))
    model, data = _setup(seed=1)
    t = Trainer(model, CFG, data, str(tmp_path / "r"), spec_source=SPEC)
    with pytest.raises(UserError, match="different data"):
        t.restore(arrays, meta)
    model, data = _setup()
    # a comment is not the model: resuming compares the checked models, not the bytes
    Trainer(model, CFG, data, str(tmp_path / "r"), spec_source=SPEC + "# changed\n").restore(arrays, meta)
    other = check_source(SPEC.replace("dense 3", "dense 3 use_bias=false")).model
    assert other is not None and other.total_params != model.total_params
    t = Trainer(other, CFG, data, str(tmp_path / "r"), spec_source=SPEC)
    with pytest.raises(UserError, match="different spec"):
        t.restore(arrays, meta)


def test_early_stopping_as_keras_counts_patience(tmp_path):
    # min_delta so large nothing counts as an improvement: Keras stops once `patience` epochs
    # in a row did not improve, and never in the first epoch
    for patience, epochs_run in ((0, 2), (1, 2), (2, 3)):
        cfg = TrainConfig(**{**CFG.__dict__, "epochs": 6,
                             "early_stopping": EarlyStopping("val_loss", patience=patience, min_delta=1e9)})
        t = _train(tmp_path, cfg, name=f"es{patience}")
        assert len(t.state.history["loss"]) == epochs_run, patience
    cfg = TrainConfig(**{**CFG.__dict__, "epochs": 6, "early_stopping": EarlyStopping("val_accuracy", patience=1,
                                                                                       min_delta=2.0,
                                                                                       restore_best_weights=True)})
    best_of_first = _train(tmp_path, TrainConfig(**{**CFG.__dict__, "epochs": 1}), name="one")
    t = _train(tmp_path, cfg, name="esr")
    for k in t.net.weights:  # epoch 1 was the best: its weights are restored
        assert np.array_equal(t.net.weights[k], best_of_first.net.weights[k])
    # Keras restores the best weights at the end even when training ran all its epochs
    cfg = TrainConfig(**{**CFG.__dict__, "epochs": 3, "early_stopping": EarlyStopping("loss", patience=5,
                                                                                      min_delta=1e9,
                                                                                      restore_best_weights=True)})
    t = _train(tmp_path, cfg, name="esall")
    assert len(t.state.history["loss"]) == 3
    with np.load(tmp_path / "esall" / "weights.npz") as w:
        for k in t.net.weights:
            assert np.array_equal(w[k], best_of_first.net.weights[k])


@pytest.mark.reference
def test_fit_matches_keras(tmp_path):
    """Same initial weights, no shuffling, no dropout: nnc's loop gives Keras's weights and history
    (SGD with momentum and weight decay, a last partial batch, validation split, early stopping)."""
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    spec = "model k\ninput x: float32[6]\ndense 8 activation=tanh\ndense 3 activation=softmax\n"
    model = check_source(spec).model
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)).astype(np.int64)
    cfg = TrainConfig(loss="sparse_categorical_crossentropy",
                      optimizer=OptimizerConfig("sgd", 0.1, momentum=0.9, weight_decay=0.01),
                      metrics=("accuracy",), epochs=5, batch_size=16, validation_split=0.2, seed=0, shuffle=False,
                      early_stopping=EarlyStopping("val_loss", patience=1, min_delta=0.05, restore_best_weights=True))
    t = Trainer(model, cfg, Dataset("x", x, y), str(tmp_path / "k"), spec_source=spec)
    w0 = {k: v.copy() for k, v in t.net.weights.items()}
    t.fit()

    km = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                           keras.layers.Dense(3, activation="softmax")])
    km.set_weights([w0["dense_1.kernel"], w0["dense_1.bias"], w0["dense_2.kernel"], w0["dense_2.bias"]])
    km.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"],
               optimizer=keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01))
    h = km.fit(x, y, epochs=5, batch_size=16, validation_split=0.2, shuffle=False, verbose=0,
               callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=1, min_delta=0.05,
                                                        restore_best_weights=True)]).history
    assert len(h["loss"]) == len(t.state.history["loss"])
    # the case exercises stopping early and restoring an earlier epoch's weights
    assert t.state.stopped_epoch is not None and t.state.best_epoch < t.state.stopped_epoch
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(t.state.history[key], h[key], rtol=1e-4, atol=1e-6, err_msg=key)
    for ours, theirs in zip(t.net.weights.values(), km.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


# --- the command, in a real process --------------------------------------------------------------

CONVNET = os.path.join(os.path.dirname(__file__), "..", "..", "specs", "digits_convnet.nnspec")

# `nnc train` in a process of its own that sends itself SIGNAL after step 5 of epoch 2: a real
# kill (or Ctrl-C) at a known place mid-epoch, whatever the machine's speed
_SELF_SIGNAL = """
import os, signal, sys
# as a terminal's Ctrl-C finds it: a suite started in the background of a non-interactive shell
# hands its children SIGINT ignored, and Python then installs no KeyboardInterrupt at all
signal.signal(signal.SIGINT, signal.default_int_handler)
import nnc.training.loop as t
init = t.Trainer.__init__
def patched(self, *a, **k):
    init(self, *a, **k)
    self.on_step = lambda epoch, step: os.kill(os.getpid(), signal.{sig}) if (epoch, step) == (1, 5) else None
t.Trainer.__init__ = patched
from nnc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _nnc(*args, signal_at_epoch_2=None):
    code = (_SELF_SIGNAL.format(sig=signal_at_epoch_2) if signal_at_epoch_2
            else "import sys; from nnc.cli import main; sys.exit(main())")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    args = ["train", CONVNET, "--data", "digits", "--epochs", "3", "--quiet"]
    cut = _nnc(*args, "--out", str(tmp_path / "cut"), signal_at_epoch_2="SIGKILL")
    assert cut.returncode == -signal.SIGKILL, cut.stderr
    _, meta = read_state(str(tmp_path / "cut"))
    assert meta["epoch"] == 1  # killed in epoch 2, before its checkpoint
    resumed = _nnc("train", "--resume", str(tmp_path / "cut"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    full = _nnc(*args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    with np.load(tmp_path / "full" / "weights.npz") as a, np.load(tmp_path / "cut" / "weights.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            assert np.array_equal(a[k], b[k]), k
    assert json.loads((tmp_path / "cut" / "history.json").read_text()) == \
        json.loads((tmp_path / "full" / "history.json").read_text())
    assert (tmp_path / "cut" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    p = _nnc("train", CONVNET, "--data", "digits", "--epochs", "3", "--out", str(out), signal_at_epoch_2="SIGINT")
    assert p.returncode == 130, p.stderr
    assert "interrupted in epoch 2/3" in p.stderr and f"nnc train --resume {out}" in p.stderr
    assert "Traceback" not in p.stderr
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]  # nothing half-written left behind
    _, meta = read_state(str(out))
    assert meta["epoch"] == 1
    with np.load(out / "weights.npz") as w:
        assert "dense_2.kernel" in w.files


def test_curves_show_the_loss_and_every_metric(tmp_path):
    from nnc.training.loop import curve_panels, plot_curves

    history = {"val_loss": [0.9, 0.8], "mae": [0.5, 0.4], "loss": [1.0, 0.7], "auc": [0.6, 0.7],
               "val_mae": [0.6, 0.5], "val_auc": [0.5, 0.6], "precision": [0.5, 0.6], "recall": [0.4, 0.5]}
    assert curve_panels(history) == ["loss", "mae", "auc", "precision", "recall"]
    assert curve_panels({"loss": [1.0]}) == ["loss"]
    path = tmp_path / "curves.png"
    plot_curves(history, str(path), title="m")
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1500, 720)  # three panels to a row, two rows, at 100 dpi
