"""nnc.fit, nnc.evaluate and nnc.predict on arrays in memory: the loop of `nnc train`, so the
same arrays in memory and in an .npz give bit-identical histories and weights; callbacks;
validation_data; resume; refusals with clear messages."""

import json
import os

import numpy as np
import pytest

import nnc
from nnc.cli import main
from nnc.engines.numpy import fpenv
from nnc.engines.numpy import Network
from nnc.lang.errors import SpecError, UserError

SPEC = """model api_small
input image: float32[4, 4, 1]
conv2d 4 kernel=3 activation=relu
flatten
dropout 0.3
dense 3 activation=softmax

train {
  loss sparse_categorical_crossentropy
  optimizer adam lr=0.01
  metrics accuracy
  epochs 3
  batch_size 8
  validation_split 0.25
  seed 2
}
"""


def _data(n=44, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 4, 4), dtype=np.uint8)  # uint8, no channel axis: both are prepared
    y = (x[:, 0, 0] > 128).astype(np.int64) + (x[:, 1, 1] > 100)
    return x, y


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "api_small.nnspec"
    path.write_text(SPEC)
    return path


def test_fit_on_arrays_is_nnc_train_on_the_same_npz_bit_for_bit(spec, tmp_path, capsys):
    x, y = _data()
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    assert main(["train", str(spec), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "cli"), "-q"]) == 0
    h = nnc.fit(nnc.load(str(spec)), x, y, verbose=0)
    cli_weights = np.load(tmp_path / "cli" / "weights.npz")
    assert sorted(cli_weights.files) == sorted(h.weights)
    for k in h.weights:
        assert np.array_equal(cli_weights[k], h.weights[k]), k
    cli_history = json.loads((tmp_path / "cli" / "history.json").read_text())
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for k, values in h.history.items():
        assert values == cli_history[k], k  # the same floats, not close ones
    assert h.epoch == [0, 1, 2] and h.params["epochs"] == 3 and h.stopped_epoch is None
    # with out=, fit writes what nnc train writes, and the spec may be given as a path
    h2 = nnc.fit(str(spec), x, y, out=tmp_path / "api", verbose=0)
    assert sorted(os.listdir(tmp_path / "api")) == sorted(os.listdir(tmp_path / "cli"))
    api_weights = np.load(tmp_path / "api" / "weights.npz")
    assert all(np.array_equal(api_weights[k], cli_weights[k]) for k in h2.weights)


def test_fit_without_out_writes_nothing(spec, tmp_path, monkeypatch):
    model = nnc.load(str(spec))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    h = nnc.fit(model, *_data(), epochs=1, verbose=0)
    assert os.listdir(work) == [] and h.out is None and len(h.history["loss"]) == 1


def test_resume_continues_exactly_and_refuses_changes(spec, tmp_path):
    model, (x, y) = nnc.load(str(spec)), _data()
    straight = nnc.fit(model, x, y, epochs=4, verbose=0)
    nnc.fit(model, x, y, epochs=2, out=tmp_path / "run", verbose=0)
    with pytest.raises(UserError, match="already holds a training run"):
        nnc.fit(model, x, y, out=tmp_path / "run", verbose=0)
    with pytest.raises(UserError, match="batch_size cannot change when resuming"):
        nnc.fit(model, x, y, epochs=4, batch_size=4, out=tmp_path / "run", resume=True, verbose=0)
    with pytest.raises(UserError, match="trained on different data"):
        nnc.fit(model, x[::-1], y[::-1], epochs=4, out=tmp_path / "run", resume=True, verbose=0)
    resumed = nnc.fit(model, x, y, epochs=4, out=tmp_path / "run", resume=True, verbose=0)
    assert resumed.history == straight.history
    assert all(np.array_equal(resumed.weights[k], straight.weights[k]) for k in straight.weights)


def test_validation_data_replaces_validation_split(spec):
    model, (x, y) = nnc.load(str(spec)), _data()
    xv, yv = _data(n=12, seed=5)
    with_val = nnc.fit(model, x, y, validation_data=(xv, yv), verbose=0)
    alone = nnc.fit(model, x, y, validation_split=0.0, verbose=0)
    # all of x trains (the spec's validation_split 0.25 is not applied), as without validation data
    assert with_val.params["steps"] == alone.params["steps"] == 6
    assert with_val.history["loss"] == alone.history["loss"]
    assert "val_loss" not in alone.history
    # the last val_loss is the loss of the final weights on (xv, yv)
    final = nnc.evaluate(model, xv, yv, weights=with_val)
    assert with_val.history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-6)
    assert with_val.history["val_accuracy"][-1] == pytest.approx(final["accuracy"], rel=1e-6)
    # patience watches val_loss when validation data is given apart
    stopped = nnc.fit(model, x, y, validation_data=(xv, yv), epochs=30, patience=1, lr=0.5, verbose=0)
    assert stopped.config.early_stopping.monitor == "val_loss"
    assert len(stopped.history["loss"]) < 30 and stopped.stopped_epoch == len(stopped.history["loss"]) - 1


class Recorder(nnc.Callback):
    def __init__(self, stop_at=None):
        self.calls, self.stop_at, self.flags = [], stop_at, []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, step, logs=None):
        self.calls.append(("batch", step, logs["loss"]))
        self.flags.append(fpenv.get_mxcsr())
        if self.stop_at == ("batch", len([c for c in self.calls if c[0] == "batch"])):
            self.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))
        logs["loss"] = -1.0  # a copy: the history keeps its value
        if self.stop_at == ("epoch", epoch):
            self.stop_training = True

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", logs))


def test_callbacks_see_every_step_and_epoch_and_can_stop(spec):
    model, (x, y) = nnc.load(str(spec)), _data()
    before = fpenv.get_mxcsr() & ~0x3F  # the modes, not the sticky status bits
    rec = Recorder()
    h = nnc.fit(model, x, y, callbacks=[rec], verbose=0)
    kinds = [c[0] for c in rec.calls]
    # 33 training samples (the last 0.25 validate), batch 8: 5 steps an epoch, 3 epochs
    assert kinds == ["train_begin"] + (["epoch_begin"] + ["batch"] * 5 + ["epoch_end"]) * 3 + ["train_end"]
    assert [c[1] for c in rec.calls if c[0] == "batch"] == [0, 1, 2, 3, 4] * 3
    ends = [c for c in rec.calls if c[0] == "epoch_end"]
    assert [e[1] for e in ends] == [0, 1, 2]
    for _, epoch, logs in ends:
        assert logs == {k: v[epoch] for k, v in h.history.items()}
    assert min(h.history["loss"]) > 0 and rec.calls[-1][1] == {k: v[-1] for k, v in h.history.items()}
    # the last step's running loss is the epoch's loss
    assert [c[2] for c in rec.calls if c[0] == "batch"][4] == h.history["loss"][0]
    if fpenv.available():  # flush-to-zero while training, the caller's flags back after
        assert all(f & fpenv.FLAGS == fpenv.FLAGS for f in rec.flags)
        assert fpenv.get_mxcsr() & ~0x3F == before
    assert rec.trainer is not None and set(rec.trainer.net.weights) == set(h.weights)

    at_epoch = nnc.fit(model, x, y, callbacks=[Recorder(stop_at=("epoch", 1))], verbose=0)
    assert len(at_epoch.history["loss"]) == 2 and at_epoch.stopped_epoch == 1
    assert at_epoch.history["loss"] == h.history["loss"][:2]
    mid = Recorder(stop_at=("batch", 3))
    in_epoch = nnc.fit(model, x, y, callbacks=[mid], verbose=0)
    # stopped after its third step: that epoch is validated and recorded, and the run ends
    assert [c[0] for c in mid.calls].count("batch") == 3 and in_epoch.stopped_epoch == 0
    assert len(in_epoch.history["val_loss"]) == 1
    assert in_epoch.history["loss"][0] == mid.calls[-3][2]  # the running loss of step 3


def test_predict_and_evaluate_agree_with_the_network(spec, tmp_path):
    model, (x, y) = nnc.load(str(spec)), _data()
    h = nnc.fit(model, x, y, out=tmp_path / "run", verbose=0)
    xs = x.reshape(-1, 4, 4, 1).astype(np.float32) * np.float32(1 / 255)  # what preparation does to uint8 images
    expected = Network(model, h.weights).predict(xs)
    assert np.array_equal(nnc.predict(model, x, weights=h), expected)
    assert np.array_equal(nnc.predict(model, xs, weights=tmp_path / "run" / "weights.npz"), expected)
    result = nnc.evaluate(model, x, y, weights=tmp_path / "run")
    # independently: Keras's sparse categorical cross-entropy and accuracy from the probabilities
    p = expected.astype(np.float64)
    assert result["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(len(y)), y])), rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))
    assert nnc.evaluate(model, x, y, weights=h) == result


def test_class_weight_as_keras_takes_it(spec):
    model, (x, y) = nnc.load(str(spec)), _data()
    as_dict = nnc.fit(model, x, y, epochs=1, class_weight={0: 3.0}, verbose=0)
    as_list = nnc.fit(model, x, y, epochs=1, class_weight=[3.0, 1.0, 1.0], verbose=0)
    plain = nnc.fit(model, x, y, epochs=1, verbose=0)
    assert as_dict.history == as_list.history != plain.history


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: nnc.fit(m, x[:, :3], y), r"x has samples of shape \[3, 4\], but the input 'image' takes \[4, 4, 1\]"),
    (lambda m, x, y: nnc.fit(m, x, y[:-1]), "x has 44 samples, but y has 43"),
    (lambda m, x, y: nnc.fit(m, x, y + 5), r"y has labels up to 7, but the model outputs 3 classes"),
    (lambda m, x, y: nnc.fit(m, x.astype(str), y), "x has dtype <U3, but the input 'image' takes real numbers"),
    (lambda m, x, y: nnc.fit(m, 3.0, y), "x is a single value"),
    (lambda m, x, y: nnc.fit(m, x, y, validation_data=(x,)), r"validation_data must be a pair \(x_val, y_val\)"),
    (lambda m, x, y: nnc.fit(m, x, y, validation_data=(x, y[:, None] * 9)),
     r"validation_data\[1\] has labels up to 18"),
    (lambda m, x, y: nnc.fit(m, x, y, lrr=0.1), "nnc.fit got an unknown setting lrr="),
    (lambda m, x, y: nnc.fit(m, x, y, learning_rate="fast"), "lr must be a number, received 'fast'"),
    (lambda m, x, y: nnc.fit(m, x, y, optimizer="sgdd"), "optimizer='sgdd' is not one of"),
    (lambda m, x, y: nnc.fit(m, x, y, epochs=0), "epochs must be at least 1"),
    (lambda m, x, y: nnc.fit(m, x, y, epochs=2.5), "epochs must be a whole number"),
    (lambda m, x, y: nnc.fit(m, x, y, verbose=5), "verbose must be 'auto', 0, 1 or 2"),
    (lambda m, x, y: nnc.fit(m, x, y, resume=True), "resume=True needs out="),
    (lambda m, x, y: nnc.fit(m, x, y, callbacks=[object()]), "has none of the methods"),
    (lambda m, x, y: nnc.fit(m, x, y, class_weight={5: 2.0}), "class_weight has a key 5, but class ids are 0 to 2"),
    (lambda m, x, y: nnc.fit(m, x, y, patience=2, monitor="val_loss", validation_split=0.0),
     "early stopping monitors val_loss, but there is no validation data"),
    (lambda m, x, y: nnc.fit({"not": "a model"}, x, y), "model must be a checked nnc.Model"),
    (lambda m, x, y: nnc.predict(m, x), "nnc.predict needs weights="),
    (lambda m, x, y: nnc.predict(m, x, weights={"dense_1.kernel": np.zeros((3, 3), np.float32)}),
     "weights does not fit api_small"),
    (lambda m, x, y: nnc.evaluate(m, x, y, weights="/nonexistent/w.npz"), "cannot read weights"),
    (lambda m, x, y: nnc.predict(m, x, weights={}, batch_size=0), "weights does not fit"),
])
def test_bad_inputs_are_refused_with_clear_messages(spec, call, message):
    x, y = _data()
    with pytest.raises(UserError, match=message):
        call(nnc.load(str(spec)), x, y)


def test_a_spec_with_errors_raises_spec_error(tmp_path):
    bad = tmp_path / "bad.nnspec"
    bad.write_text("model bad\ninput x: float32[4]\ndense 0\n")
    with pytest.raises(SpecError, match="bad.nnspec has 1 error"):
        nnc.fit(str(bad), np.zeros((4, 4), np.float32), np.zeros(4))


def test_import_nnc_stays_light():
    import subprocess
    import sys

    code = "import sys, nnc; nnc.fit; print('numpy' in sys.modules, 'nnc.training.loop' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_a_run_of_nnc_fit_resumes_from_the_command_line_with_its_arrays_in_a_file(spec, tmp_path, capsys):
    model, (x, y) = nnc.load(str(spec)), _data()
    nnc.fit(model, x, y, epochs=2, out=tmp_path / "run", verbose=0)
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "4", "-q"]) == 2
    assert "was trained on arrays in memory (nnc.fit)" in capsys.readouterr().err
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    assert main(["train", "--resume", str(tmp_path / "run"), "--data", str(tmp_path / "d.npz"), "--epochs", "4",
                 "-q"]) == 0
    straight = nnc.fit(model, x, y, epochs=4, verbose=0)
    resumed = np.load(tmp_path / "run" / "weights.npz")
    assert all(np.array_equal(resumed[k], straight.weights[k]) for k in straight.weights)


def test_a_refused_run_leaves_no_folder(spec, tmp_path):
    model, (x, y) = nnc.load(str(spec)), _data()
    for bad in ({"epochs": 0}, {"patience": 2, "monitor": "val_loss", "validation_split": 0.0}):
        with pytest.raises(UserError):
            nnc.fit(model, x, y, out=tmp_path / "run", verbose=0, **bad)
    with pytest.raises(UserError):
        nnc.fit(model, x, y[:-1], out=tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_ragged_token_lists_are_padded_as_from_a_file():
    model = nnc.loads("model toks\ninput t: int64[6] vocab=20\nembedding 4\nglobalavgpool\ndense 1 activation=sigmoid\n"
                      "train {\n  loss binary_crossentropy\n  epochs 2\n  batch_size 4\n}\n")
    rng = np.random.default_rng(1)
    seqs = [list(rng.integers(1, 20, size=rng.integers(2, 9))) for _ in range(12)]
    y = rng.integers(0, 2, size=12)
    padded = np.zeros((12, 6), np.int64)  # keras.utils.pad_sequences: zeros in front, long ones keep their end
    for i, s in enumerate(seqs):
        padded[i, 6 - len(s[-6:]):] = s[-6:]
    ragged = nnc.fit(model, seqs, y, verbose=0)
    assert ragged.history == nnc.fit(model, padded, y, verbose=0).history
