"""Metrics (nnc.training.metrics): each streamed over several batches against keras.metrics, early
stopping's direction against Keras's, the checker's diagnostics for metrics, loss options and
class_weight, and `nnc train` with new metrics, a new loss and --class-weight end to end."""

import json
import os

import numpy as np
import pytest

from nnc.cli import main
from nnc.lang.checker import check_source
from nnc.lang.metric_rules import METRICS, maximized
from nnc.training.loop import read_state
from nnc.training.losses import final
from nnc.training.metrics import AUC, Precision, Recall, make_metrics


def _keras():
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


def _batches(kind, rng, n_batches=4, size=9, classes=4):
    """(z, y) batches: z the pre-activation outputs, y the targets as the loss takes them."""
    out = []
    for i in range(n_batches):
        n = size + i  # batches of different sizes: a mean of batch means would be wrong
        if kind == "binary":
            z = rng.normal(size=(n, 1)) * 2
            z[:2] = [[40.0], [-40.0]]  # saturated: probabilities exactly 1 and 0 in float32
            y = (rng.random((n, 1)) < 0.4).astype(np.float32)
        elif kind == "multilabel":
            z = rng.normal(size=(n, 3)) * 2
            y = (rng.random((n, 3)) < 0.3).astype(np.float32)
        elif kind == "sparse":
            z = rng.normal(size=(n, classes)) * 2
            y = rng.integers(0, classes, size=n)
        elif kind == "onehot":
            z = rng.normal(size=(n, classes)) * 2
            y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, size=n)]
        else:  # sequence: sparse labels per position
            z = rng.normal(size=(n, 5, classes)) * 2
            y = rng.integers(0, classes, size=(n, 5))
        out.append((z.astype(np.float32), y))
    return out


# (our metric, loss, activation, batch kind, the Keras metric's constructor)
CASES = [
    ("accuracy", "binary_crossentropy", "sigmoid", "binary", lambda k: k.metrics.BinaryAccuracy()),
    ("accuracy", "sparse_categorical_crossentropy", "softmax", "sparse", lambda k: k.metrics.SparseCategoricalAccuracy()),
    ("accuracy", "categorical_crossentropy", "softmax", "onehot", lambda k: k.metrics.CategoricalAccuracy()),
    ("mae", "binary_crossentropy", "sigmoid", "multilabel", lambda k: k.metrics.MeanAbsoluteError()),
    ("mse", "categorical_crossentropy", "softmax", "onehot", lambda k: k.metrics.MeanSquaredError()),
    ("mae", "mse", None, "multilabel", lambda k: k.metrics.MeanAbsoluteError()),
    ("auc", "binary_crossentropy", "sigmoid", "binary", lambda k: k.metrics.AUC()),
    ("auc", "binary_crossentropy", "sigmoid", "multilabel", lambda k: k.metrics.AUC()),
    ("auc", "categorical_crossentropy", "softmax", "onehot", lambda k: k.metrics.AUC()),
    ("precision", "binary_crossentropy", "sigmoid", "binary", lambda k: k.metrics.Precision()),
    ("precision", "categorical_crossentropy", "softmax", "onehot", lambda k: k.metrics.Precision()),
    ("recall", "binary_crossentropy", "sigmoid", "multilabel", lambda k: k.metrics.Recall()),
    ("recall", "categorical_crossentropy", "softmax", "onehot", lambda k: k.metrics.Recall()),
    ("top_k_accuracy", "sparse_categorical_crossentropy", "softmax", "sparse",
     lambda k: k.metrics.SparseTopKCategoricalAccuracy(k=2)),
    ("top_k_accuracy", "categorical_crossentropy", "softmax", "onehot",
     lambda k: k.metrics.TopKCategoricalAccuracy(k=2)),
    ("top_k_accuracy", "sparse_categorical_crossentropy", "softmax", "sequence",
     lambda k: k.metrics.SparseTopKCategoricalAccuracy(k=3)),
]


@pytest.mark.reference
@pytest.mark.parametrize("name,loss,act,kind,theirs", CASES)
def test_streamed_metric_matches_keras(name, loss, act, kind, theirs):
    """After every batch, nnc's running value is Keras's stateful metric's result(); after a
    reset both start over."""
    keras = _keras()
    rng = np.random.default_rng(21)
    batches = _batches(kind, rng)
    k = 3 if kind == "sequence" else 2
    ours = make_metrics((name,), loss, batches[0][0].shape[1:], act, k)[0]
    assert ours.name == name
    ref = theirs(keras)
    for epoch in range(2):
        ours.reset()
        ref.reset_state()
        for z, y in batches[epoch:]:
            ours.update(z, y, act)
            ref.update_state(y, final(z, act))
            assert ours.result() == pytest.approx(float(ref.result()), rel=1e-5, abs=1e-6), (name, kind)


def test_auc_streams_counts_not_a_mean_of_batch_values():
    # batch 1 is ranked perfectly, batch 2 perfectly backwards; over both the ranking is half right
    z1, y1 = np.array([[3.0], [-3.0]]), np.array([[1.0], [0.0]])
    z2, y2 = np.array([[-1.0], [1.0]]), np.array([[1.0], [0.0]])
    auc = AUC()
    auc.update(z1, y1, "sigmoid")
    assert auc.result() == pytest.approx(1.0)
    auc.update(z2, y2, "sigmoid")
    # pairs (positive, negative) ranked right: (3, -3), (3, 1), (-1, -3); wrong: (-1, 1): 3 of 4
    assert auc.result() == pytest.approx(0.75, abs=0.01)
    p, r = Precision(), Recall()
    for m in (p, r):
        m.update(z1, y1, "sigmoid")
        m.update(z2, y2, "sigmoid")
    assert p.result() == pytest.approx(1 / 2) and r.result() == pytest.approx(1 / 2)


@pytest.mark.reference
def test_early_stopping_direction_is_keras():
    keras = _keras()
    theirs = {"accuracy": keras.metrics.Accuracy(), "mae": keras.metrics.MeanAbsoluteError(),
              "mse": keras.metrics.MeanSquaredError(), "auc": keras.metrics.AUC(),
              "precision": keras.metrics.Precision(), "recall": keras.metrics.Recall(),
              "top_k_accuracy": keras.metrics.TopKCategoricalAccuracy()}
    assert set(theirs) == set(METRICS)
    for name, metric in theirs.items():
        assert maximized(name) == maximized("val_" + name) == (metric._direction == "up"), name
    assert not maximized("loss") and not maximized("val_loss")


# --- the checker -----------------------------------------------------------------------------------

def _diags(last: str, train: str) -> list[tuple[int, int, str, str]]:
    text = f"model m\ninput x: float32[4]\n{last}\ntrain {{\n  {train}\n}}\n"
    return [(d.span.line, d.span.col, d.code, d.message) for d in check_source(text).diagnostics]


SOFTMAX, SIGMOID = "dense 3 activation=softmax", "dense 1 activation=sigmoid"
MISTAKES = [
    # (last layer, train line, column, code, words of the message)
    (SOFTMAX, "loss hubr", 8, "bad-value", "did you mean 'huber'"),
    (SOFTMAX, "loss huber delta=0", 20, "bad-value", "delta must be positive"),
    (SOFTMAX, "loss huber detla=2", 14, "unknown-option", "did you mean 'delta'"),
    (SOFTMAX, "loss mse delta=2", 12, "unknown-option", "delta is an option of huber"),
    (SOFTMAX, "loss categorical_crossentropy label_smoothing=1.5", 49, "bad-value", "in [0, 1]"),
    (SOFTMAX, "loss sparse_categorical_crossentropy label_smoothing=0.1", 40, "bad-train", "takes no label_smoothing"),
    (SOFTMAX, "metrics aucc", 11, "bad-train", "did you mean 'auc'"),
    (SOFTMAX, "metrics auc auc", 15, "bad-train", "given twice"),
    (SOFTMAX, "metrics accuracy k=3", 20, "unknown-option", "top_k_accuracy is not among the metrics"),
    (SOFTMAX, "metrics top_k_accuracy kk=2", 26, "unknown-option", "did you mean 'k'"),
    (SOFTMAX, "metrics top_k_accuracy k=0", 28, "bad-value", "positive integer"),
    (SOFTMAX, "metrics top_k_accuracy k=4", 28, "bad-train", "the model has 3 classes"),
    (SIGMOID, "loss binary_crossentropy\n  metrics top_k_accuracy", 11, "bad-train", "top_k_accuracy ranks classes"),
    ("dense 1", "loss mse\n  metrics auc", 11, "bad-train", "auc needs probabilities"),
    (SOFTMAX, "metrics precision", 11, "bad-train", "labels are class ids"),
    (SOFTMAX, "metrics mse", 11, "bad-train", "labels are class ids"),
    (SOFTMAX, "class_weight 1 2 3 4", 22, "bad-train", "a weight to class 3, but the model has 3 classes"),
    (SOFTMAX, "class_weight 1 2", 3, "bad-train", "gives 2 weights, but the model has 3 classes"),
    (SOFTMAX, "class_weight -1 2 3", 16, "bad-value", "0 or more"),
    (SOFTMAX, "class_weight w=1", 16, "bad-train", "one weight per class id"),
    ("dense 3 activation=sigmoid", "loss binary_crossentropy\n  class_weight 1 2", 3, "bad-train",
     "needs one sigmoid output"),
    ("dense 1", "loss huber\n  class_weight 1 2", 3, "bad-train", "loss huber has no classes"),
    (SOFTMAX, "metrics accuracy\n  early_stopping monitor=auc", 26, "bad-train", "auc is not among the metrics"),
]


@pytest.mark.parametrize("last,train,col,code,words", MISTAKES)
def test_checker_locates_each_mistake(last, train, col, code, words):
    diags = _diags(last, train)
    assert len(diags) == 1, diags
    line = 5 + train.count("\n")
    assert diags[0][:3] == (line, col, code) and words in diags[0][3], diags


def test_checker_accepts_the_new_losses_metrics_and_class_weight():
    ok = [
        (SOFTMAX, "loss categorical_crossentropy label_smoothing=0.1\n  metrics accuracy auc precision recall "
                  "top_k_accuracy k=2 mae mse\n  class_weight 1 2 0.5\n  early_stopping monitor=val_auc\n"
                  "  validation_split 0.2"),
        (SIGMOID, "loss binary_crossentropy label_smoothing=0.05\n  metrics auc precision recall accuracy\n"
                  "  class_weight 1.0 5.0"),
        (SOFTMAX, "loss sparse_categorical_crossentropy\n  metrics acc top_k_categorical_accuracy k=3\n"
                  "  class_weight 1 1 2"),
        ("dense 1", "loss huber delta=2.5\n  metrics mae mse"),
        ("dense 1", "loss mean_absolute_error"),
        (SOFTMAX, "loss kld\n  metrics mae auc"),
    ]
    for last, train in ok:
        r = check_source(f"model m\ninput x: float32[4]\n{last}\ntrain {{\n  {train}\n}}\n")
        assert r.ok and not r.diagnostics, (train, r.diagnostics)
    cfg = check_source(f"model m\ninput x: float32[4]\n{ok[0][0]}\ntrain {{\n  {ok[0][1]}\n}}\n").model.train
    assert cfg.label_smoothing == 0.1 and cfg.top_k == 2 and cfg.class_weight == (1.0, 2.0, 0.5)
    assert cfg.metrics == ("accuracy", "auc", "precision", "recall", "top_k_accuracy", "mae", "mse")
    cfg = check_source(f"model m\ninput x: float32[4]\ndense 1\ntrain {{\n  {ok[3][1]}\n}}\n").model.train
    assert cfg.loss == "huber" and cfg.huber_delta == 2.5 and cfg.label_smoothing == 0.0
    cfg = check_source(f"model m\ninput x: float32[4]\n{SOFTMAX}\ntrain {{\n  {ok[2][1]}\n}}\n").model.train
    assert cfg.metrics == ("accuracy", "top_k_accuracy") and cfg.top_k == 3


# --- nnc train, end to end -------------------------------------------------------------------------

SPEC = """model binary
input x: float32[4]
dense 6 activation=tanh
dense 1 activation=sigmoid
train {
  loss binary_crossentropy label_smoothing=0.05
  optimizer sgd lr=0.1
  metrics accuracy auc precision recall
  class_weight 1.0 3.0
  early_stopping monitor=val_auc patience=5
  epochs 3
  batch_size 8
  validation_split 0.25
  seed 2
}
"""


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(48, 4)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 2] > 0.6).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    (tmp_path / "b.nnspec").write_text(SPEC)
    return tmp_path


@pytest.mark.reference
def test_cli_history_has_the_new_metrics_as_keras_computes_them(files, capsys):
    keras = _keras()
    spec, d = str(files / "b.nnspec"), str(files / "d.npz")
    assert main(["train", spec, "--data", d, "--out", str(files / "r")]) == 0
    out = capsys.readouterr().out
    assert "val_auc: " in out and "test (8 samples): loss: " in out and "precision: " in out
    history = json.loads((files / "r" / "history.json").read_text())
    history.pop("schema_version", None)  # the file's format version, not a metric
    assert set(history) == {"loss", "accuracy", "auc", "precision", "recall",
                            "val_loss", "val_accuracy", "val_auc", "val_precision", "val_recall"}
    assert all(len(v) == 3 for v in history.values())
    # the last epoch's validation metrics, recomputed by Keras from the trained weights
    from nnc.engines.numpy import Network
    from nnc.lang.checker import check_file

    with np.load(files / "r" / "weights.npz") as w:
        net = Network(check_file(spec).model, {k: w[k] for k in w.files})
    with np.load(d) as data:
        x_val, y_val = data["x_train"][30:], data["y_train"][30:, None]
    p = net.predict(x_val)
    for key, metric in (("val_auc", keras.metrics.AUC()), ("val_precision", keras.metrics.Precision()),
                        ("val_recall", keras.metrics.Recall()), ("val_accuracy", keras.metrics.BinaryAccuracy())):
        metric.update_state(y_val, p)
        assert history[key][-1] == pytest.approx(float(metric.result()), abs=1e-6), key
    # unweighted, smoothed binary cross-entropy on the validation split, as Keras's evaluate
    want = float(keras.losses.BinaryCrossentropy(label_smoothing=0.05)(y_val, p))
    assert history["val_loss"][-1] == pytest.approx(want, rel=1e-4)


def test_cli_loss_and_class_weight_flags(files, capsys):
    spec, d = str(files / "b.nnspec"), str(files / "d.npz")
    assert main(["train", spec, "--data", d, "--out", str(files / "o"), "--class-weight", "2", "0.5",
                 "--epochs", "1", "-q"]) == 0
    _, meta = read_state(str(files / "o"))
    assert meta["config"]["class_weight"] == [2.0, 0.5] and meta["config"]["label_smoothing"] == 0.05
    capsys.readouterr()
    assert main(["train", "--resume", str(files / "o"), "--class-weight", "1", "1"]) == 2
    assert "--class-weight cannot change when resuming" in capsys.readouterr().err
    # a weight for a class the output does not have: a clear error, no traceback
    assert main(["train", spec, "--data", d, "--out", str(files / "bad"), "--class-weight", "1", "2", "3"]) == 2
    err = capsys.readouterr().err
    assert "class_weight gives a weight to class 2, but the model has 2 classes" in err and "Traceback" not in err
    assert main(["train", spec, "--data", d, "--out", str(files / "h"), "--loss", "huber", "--epochs", "1",
                 "--monitor", "loss", "-q"]) == 2
    assert "class_weight weighs the samples of each class, but loss huber has no classes" in capsys.readouterr().err
    assert not (files / "bad").exists() and not (files / "h").exists()  # refused before the folder is made


def test_loss_override_takes_keras_defaults_for_the_loss_options():
    from nnc.lang.model import TrainConfig
    from nnc.training.loop import override

    cfg = TrainConfig(loss="categorical_crossentropy", label_smoothing=0.2, metrics=("accuracy", "auc"),
                      class_weight=(1.0, 2.0))
    new = override(cfg, loss="huber", class_weight=None)
    assert new.loss == "huber" and new.label_smoothing == 0.0 and new.huber_delta == 1.0
    assert new.class_weight == (1.0, 2.0) and new.metrics == ("accuracy", "auc")
    assert override(cfg, loss="mse").metrics == ("auc",)  # accuracy does not suit mse (as before)
    assert override(cfg, class_weight=[3, 1]).class_weight == (3.0, 1.0)
    assert override(cfg).label_smoothing == 0.2


def test_resumed_run_has_the_same_metrics_history(files):
    spec, d = str(files / "b.nnspec"), str(files / "d.npz")
    assert main(["train", spec, "--data", d, "--out", str(files / "full"), "-q"]) == 0  # 3 epochs
    assert main(["train", spec, "--data", d, "--out", str(files / "cut"), "--epochs", "2", "-q"]) == 0
    assert main(["train", "--resume", str(files / "cut"), "--epochs", "3", "-q"]) == 0
    full = json.loads((files / "full" / "history.json").read_text())
    assert json.loads((files / "cut" / "history.json").read_text()) == full and len(full["val_auc"]) == 3


def _run(files, name, spec_text, *flags):
    spec = files / f"{name}.nnspec"
    spec.write_text(spec_text)
    assert main(["train", str(spec), "--data", str(files / "d.npz"), "--out", str(files / name), "-q", *flags]) == 0
    with np.load(files / name / "weights.npz") as w:
        weights = {k: w[k] for k in w.files}
    return json.loads((files / name / "history.json").read_text()), weights


def test_loss_and_metric_flags_train_as_the_spec_that_states_them(files):
    """--label-smoothing, --metrics (Keras's aliases too), --loss huber --huber-delta: the same
    run, number for number, as the spec with those options written in its train block."""
    unweighted = SPEC.replace("  class_weight 1.0 3.0\n", "")  # huber has no classes
    cases = [  # (spec, flags, the spec stating them, the flags that leave the loss's option out)
        (SPEC, ("--label-smoothing", "0.2", "--metrics", "precision", "acc", "--monitor", "val_precision"),
         SPEC.replace("label_smoothing=0.05", "label_smoothing=0.2")
             .replace("metrics accuracy auc precision recall", "metrics precision accuracy")
             .replace("monitor=val_auc", "monitor=val_precision"),
         ("--metrics", "precision", "acc", "--monitor", "val_precision")),
        (unweighted, ("--loss", "huber", "--huber-delta", "0.5", "--metrics", "mae", "--monitor", "val_loss"),
         unweighted.replace("loss binary_crossentropy label_smoothing=0.05", "loss huber delta=0.5")
                   .replace("metrics accuracy auc precision recall", "metrics mae")
                   .replace("monitor=val_auc", "monitor=val_loss"),
         ("--loss", "huber", "--metrics", "mae", "--monitor", "val_loss")),
    ]
    for i, (spec, flags, stated, without) in enumerate(cases):
        history, weights = _run(files, f"flags{i}", spec, *flags)
        want_history, want_weights = _run(files, f"spec{i}", stated)
        assert history == want_history, flags
        for k in want_weights:
            np.testing.assert_array_equal(weights[k], want_weights[k])
        assert history["loss"] != _run(files, f"default{i}", spec, *without)[0]["loss"], "the option changed nothing"


def test_loss_and_metric_flags_are_checked_before_a_folder_is_made(files, capsys):
    spec, d = str(files / "b.nnspec"), str(files / "d.npz")
    refusals = [
        (("--huber-delta", "2"), "delta is huber's, but the loss is binary_crossentropy"),
        (("--loss", "huber", "--huber-delta", "-1", "--class-weight", "1"), "huber's delta must be positive"),
        (("--label-smoothing", "1.5"), "label_smoothing must be in [0, 1]"),
        (("--metrics", "top_k_accuracy", "--monitor", "loss"), "top_k_accuracy ranks classes"),
        (("--metrics", "f1"), "unknown metric 'f1'"),
        (("--lr", "-1"), "the learning rate must be positive"),
    ]
    for i, (flags, message) in enumerate(refusals):
        out = files / f"refused{i}"
        assert main(["train", spec, "--data", d, "--out", str(out), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (flags, err)
        assert not out.exists(), flags  # refused before the run's folder is made
    assert main(["train", spec, "--data", d, "--out", str(files / "r"), "--epochs", "1", "-q"]) == 0
    for flag in (("--metrics", "accuracy"), ("--top-k", "1"), ("--label-smoothing", "0")):
        assert main(["train", "--resume", str(files / "r"), "--epochs", "2", *flag]) == 2
        assert f"{flag[0]} cannot change when resuming" in capsys.readouterr().err


def test_metrics_flag_takes_words_or_a_comma_separated_list():
    from nnc.lang.errors import UserError
    from nnc.training.loop import _metric_names

    assert _metric_names(["precision", "acc"]) == _metric_names(["precision,acc"]) == ("precision", "accuracy")
    assert _metric_names(["mae, mse", "mae"]) == ("mae", "mse")  # each once, in order
    with pytest.raises(UserError, match="unknown metric 'f1'"):
        _metric_names(["acc,f1"])
