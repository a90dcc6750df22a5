"""`nnc train` and `nnc eval` from the command line: flags over the train block, defaults for a
spec without one, resume rules, progress output."""

import io
import json

import numpy as np
import pytest

from nnc.cli import main
from nnc.training.loop import Progress, read_state

SPEC = """model tiny
input x: float32[4]
dense 6 activation=relu
dense 3 activation=softmax
"""
TRAIN = """train {
  loss sparse_categorical_crossentropy
  optimizer sgd lr=0.05 momentum=0.9
  metrics accuracy
  epochs 2
  batch_size 8
  validation_split 0.25
  seed 1
}
"""


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    np.savez(tmp_path / "d.npz", x_train=x[:32], y_train=y[:32], x_test=x[32:], y_test=y[32:])
    (tmp_path / "with.nnspec").write_text(SPEC + TRAIN)
    (tmp_path / "without.nnspec").write_text(SPEC)
    return tmp_path


def _weights(path):
    with np.load(path) as w:
        return {k: w[k] for k in w.files}


def test_flags_override_the_train_block(files, capsys):
    d = str(files / "d.npz")
    assert main(["train", str(files / "with.nnspec"), "--data", d, "--out", str(files / "a"),
                 "--epochs", "3", "--lr", "0.01", "--batch-size", "4", "--validation-split", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "optimizer sgd lr=0.01 momentum=0.9, batch_size 4, epochs 3, validation_split 0.5, seed 1" in out
    assert "16 samples, 16 for validation" in out
    assert "epoch 3/3 4/4" in out and "test (8 samples)" in out
    _, meta = read_state(str(files / "a"))
    assert meta["config"]["optimizer"]["lr"] == 0.01 and meta["config"]["batch_size"] == 4
    assert len(json.loads((files / "a" / "history.json").read_text())["loss"]) == 3


def test_weight_decay_flag_overrides_the_train_block(files, capsys):
    assert main(["train", str(files / "with.nnspec"), "--data", str(files / "d.npz"), "--out", str(files / "wd"),
                 "--epochs", "1", "--weight-decay", "0.001", "-q"]) == 0
    _, meta = read_state(str(files / "wd"))
    assert meta["config"]["optimizer"]["weight_decay"] == 0.001


def test_spec_without_train_block_says_what_it_chose(files, capsys):
    assert main(["train", str(files / "without.nnspec"), "--data", str(files / "d.npz"),
                 "--out", str(files / "b")]) == 0
    out = capsys.readouterr().out
    assert "has no train block: training with loss sparse_categorical_crossentropy" in out
    assert "optimizer rmsprop lr=0.001" in out


def test_resume_extends_a_finished_run_to_the_same_weights(files, capsys):
    spec, d = str(files / "with.nnspec"), str(files / "d.npz")
    assert main(["train", spec, "--data", d, "--out", str(files / "long"), "--epochs", "3", "-q"]) == 0
    assert main(["train", spec, "--data", d, "--out", str(files / "short"), "-q"]) == 0  # 2 epochs
    assert main(["train", "--resume", str(files / "short"), "--epochs", "3", "-q"]) == 0
    a, b = _weights(files / "long" / "weights.npz"), _weights(files / "short" / "weights.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert main(["train", "--resume", str(files / "short"), "--lr", "0.1"]) == 2
    assert "--lr cannot change when resuming" in capsys.readouterr().err
    assert main(["train", "--resume", str(files / "nothing")]) == 2
    assert "holds no state.npz" in capsys.readouterr().err
    assert main(["train", spec, "--data", d, "--out", str(files / "short")]) == 2
    assert "already holds a training run" in capsys.readouterr().err


def test_eval_text_and_json(files, capsys):
    spec, d = str(files / "with.nnspec"), str(files / "d.npz")
    assert main(["train", spec, "--data", d, "--out", str(files / "e"), "-q"]) == 0
    capsys.readouterr()
    w = str(files / "e" / "weights.npz")
    assert main(["eval", spec, "--weights", w, "--data", d]) == 0
    text = capsys.readouterr().out
    assert text.startswith("tiny on ") and "test split, 8 samples: loss: " in text
    assert main(["eval", spec, "--weights", w, "--data", d, "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["samples"] == 8 and set(r) >= {"loss", "accuracy", "split", "model"}
    # the loss eval reports is the mean cross-entropy of the predicted probabilities on the test split
    from nnc.engines.numpy import Network
    from nnc.lang.checker import check_file

    model = check_file(spec).model
    with np.load(d) as data:
        p = Network(model, _weights(w)).predict(data["x_test"]).astype(np.float64)
        want = -np.mean(np.log(p[np.arange(8), data["y_test"]]))
    assert r["loss"] == pytest.approx(want, rel=1e-5)
    assert main(["eval", spec, "--weights", str(files / "missing.npz"), "--data", d]) == 2


def test_progress_redraws_on_a_terminal_and_prints_lines_otherwise():
    tty = io.StringIO()
    p = Progress(tty, tty=True)
    p.batch(1, 2, 5, 10, {"loss": 0.5, "accuracy": 0.75}, elapsed=2.0)
    p.epoch(1, 2, 10, {"loss": 0.4, "accuracy": 0.8}, elapsed=4.0)
    text = tty.getvalue()
    assert text.startswith("\repoch 1/2 5/10 [") and "loss: 0.5000" in text and "ETA 2.0s" in text
    assert text.endswith("epoch 1/2 10/10 - 4.0s - loss: 0.4000 - accuracy: 0.8000\033[K\n")
    log = io.StringIO()
    p = Progress(log, tty=False)
    p.batch(1, 2, 5, 10, {"loss": 0.5}, elapsed=2.0)
    p.epoch(1, 2, 10, {"loss": 0.4}, elapsed=4.0)
    assert log.getvalue() == "epoch 1/2 10/10 - 4.0s - loss: 0.4000\n"
    quiet = io.StringIO()
    Progress(quiet, quiet=True).epoch(1, 2, 10, {"loss": 0.4}, elapsed=4.0)
    assert quiet.getvalue() == ""


def test_resume_of_a_finished_run_rewrites_its_derived_files(files):
    """A kill after state.npz but before weights.npz: --resume rewrites weights and history from the state."""
    spec, d = str(files / "with.nnspec"), str(files / "d.npz")
    run = files / "killed"
    assert main(["train", spec, "--data", d, "--out", str(run), "-q"]) == 0
    good = _weights(run / "weights.npz")
    (run / "weights.npz").unlink()
    (run / "history.json").write_text("{}")
    (run / ".weights.npz.abcd1234.tmp").write_bytes(b"half")  # what a SIGKILL mid-write leaves
    assert main(["train", "--resume", str(run), "-q"]) == 0
    again = _weights(run / "weights.npz")
    assert all(np.array_equal(good[k], again[k]) for k in good)
    assert json.loads((run / "history.json").read_text())["loss"]
    assert not (run / ".weights.npz.abcd1234.tmp").exists()


def test_a_second_run_into_a_held_folder_is_refused(files, capsys):
    from nnc.training.loop import claim_run_dir

    out = files / "busy"
    held = claim_run_dir(str(out))  # another live run
    try:
        rc = main(["train", str(files / "with.nnspec"), "--data", str(files / "d.npz"), "--out", str(out), "-q"])
        err = capsys.readouterr().err
        assert rc == 2 and "is being written by another nnc train (pid" in err
    finally:
        held.close()


def test_out_onto_a_file_and_bad_numbers_are_clear_errors(files, capsys):
    spec, d = str(files / "with.nnspec"), str(files / "d.npz")
    f = files / "afile"
    f.write_text("x")
    for extra, msg in ((["--out", str(f)], "it is a file, not a folder"),
                       (["--out", str(files / "s"), "--seed", "-1"], "the seed must be 0 or more"),
                       (["--out", str(files / "n"), "--lr", "nan"], "must be a finite number"),
                       (["--out", str(files / "i"), "--lr", "inf"], "must be a finite number")):
        assert main(["train", spec, "--data", d, "-q", *extra]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and "internal error" not in err


def test_resume_accepts_a_spec_whose_comments_changed(files, capsys):
    spec, d = files / "with.nnspec", str(files / "d.npz")
    edited = files / "edited.nnspec"
    edited.write_text("# a comment added after the run started\n" + spec.read_text().replace("\n", "   \n", 1))
    run = str(files / "c")
    assert main(["train", str(spec), "--data", d, "--out", run, "--epochs", "1", "-q"]) == 0
    assert main(["train", str(edited), "--resume", run, "--epochs", "2", "-q"]) == 0
    changed = files / "changed.nnspec"
    changed.write_text(spec.read_text().replace("dense 3", "dense 4", 1))
    assert "dense 4" in changed.read_text()
    assert main(["train", str(changed), "--resume", run, "--epochs", "3", "-q"]) == 1
    assert "different spec" in capsys.readouterr().err
