"""The digits specs train to the issue's accuracy with their own train blocks, `nnc eval` reports
it, and the trained weights compiled to ONNX give the NumPy backend's predictions on onnxruntime."""

import json
import os

import numpy as np
import pytest

from nnc.cli import main
from nnc.engines.numpy import Network
from nnc.lang.checker import check_file
from nnc.lang.weights import load_checkpoint
from nnc.training.data import load_data

SPECS = os.path.join(os.path.dirname(__file__), "..", "..", "specs")
# digits_resnet (residual blocks, LANGUAGE.md "Blocks"): at least the plain convnet's accuracy
TARGETS = {"digits_convnet": 0.97, "digits_lstm": 0.95, "digits_resnet": 0.98}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each spec trained once, exactly as `nnc train SPEC --data digits` trains it."""
    runs = {}
    for name in TARGETS:
        out = tmp_path_factory.mktemp(name)
        spec = os.path.join(SPECS, f"{name}.nnspec")
        assert main(["train", spec, "--data", "digits", "--out", str(out), "--quiet"]) == 0
        runs[name] = (spec, out)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", TARGETS)
def test_spec_reaches_its_test_accuracy(name, trained, capsys):
    spec, out = trained[name]
    assert {"weights.npz", "history.json", "curves.png", "state.npz"} <= set(os.listdir(out))
    history = json.loads((out / "history.json").read_text())
    assert len(history["val_accuracy"]) == check_file(spec).model.train.epochs
    capsys.readouterr()
    assert main(["eval", spec, "--weights", str(out / "weights.npz"), "--data", "digits", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "test" and report["samples"] == 360
    assert report["accuracy"] >= TARGETS[name], report
    # the accuracy eval reports is the fraction of test digits whose argmax is the label
    model = check_file(spec).model
    data = load_data("digits", model, "sparse_categorical_crossentropy")
    pred = Network(model, load_checkpoint(str(out / "weights.npz"), model)).predict(data.x_test)
    assert report["accuracy"] == pytest.approx(np.mean(pred.argmax(-1) == data.y_test), abs=1e-12)


@pytest.mark.slow
def test_the_residual_convnet_does_at_least_as_well_as_the_plain_one(trained, capsys):
    """Issue 9: the digits train a residual convnet spec to at least the plain convnet's accuracy."""
    acc = {}
    for name in ("digits_convnet", "digits_resnet"):
        spec, out = trained[name]
        capsys.readouterr()
        assert main(["eval", spec, "--weights", str(out / "weights.npz"), "--data", "digits", "--format", "json"]) == 0
        acc[name] = json.loads(capsys.readouterr().out)["accuracy"]
    assert acc["digits_resnet"] >= acc["digits_convnet"], acc


@pytest.mark.slow
@pytest.mark.parametrize("name", TARGETS)
def test_trained_model_on_onnxruntime_predicts_as_numpy(name, trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    spec, out = trained[name]
    onnx_path = tmp_path / f"{name}.onnx"
    assert main(["compile", spec, "--weights", str(out / "weights.npz"), "-o", str(onnx_path)]) == 0
    model = check_file(spec).model
    data = load_data("digits", model, "sparse_categorical_crossentropy")
    ours = Network(model, load_checkpoint(str(out / "weights.npz"), model)).predict(data.x_test)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    theirs = sess.run(None, {sess.get_inputs()[0].name: data.x_test})[0]
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)
    assert np.array_equal(theirs.argmax(-1), ours.argmax(-1))


def test_sine_windows_are_the_series_and_its_next_value():
    from nnc.lang.checker import check_source
    from nnc.training.data import sine_series

    model = check_source("model m\ninput s: float32[16, 1]\nflatten\ndense 1\n", "<t>").model
    d = sine_series(model, n_train=50, n_test=20)
    x, y = d["x_train"], d["y_train"]
    assert x.shape == (50, 16, 1) and y.shape == (50, 1)
    # windows start one step apart: window i+1 ends with window i's target
    np.testing.assert_array_equal(x[1:, -1, 0], y[:-1, 0])
    np.testing.assert_array_equal(x[1:, :-1], x[:-1, 1:])
    # the test windows come after every training target, and the data is the same each time
    assert d["x_test"].shape == (20, 16, 1)
    np.testing.assert_array_equal(sine_series(model, n_train=50, n_test=20)["x_test"], d["x_test"])
    flat = check_source("model m\ninput s: float32[16]\ndense 1\n", "<t>").model
    np.testing.assert_array_equal(sine_series(flat, n_train=50, n_test=20)["x_train"], x[..., 0])


def test_sine_needs_a_series_input(capsys, tmp_path):
    spec = os.path.join(SPECS, "digits_convnet.nnspec")
    assert main(["train", spec, "--data", "sine", "--out", str(tmp_path / "r"), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "--data sine" in err and "[steps, 1]" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_regression_spec_forecasts_to_near_the_noise(tmp_path, capsys):
    """Issue 11: a regression spec (huber loss, mae metric) trains on the built-in series to a
    test mae near the noise's (sd 0.1: mae 0.08), far below what predicting the mean gives."""
    spec = os.path.join(SPECS, "sine_forecast.nnspec")
    out = tmp_path / "sine"
    assert main(["train", spec, "--data", "sine", "--out", str(out), "--quiet"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(history)
    capsys.readouterr()
    assert main(["eval", spec, "--weights", str(out / "weights.npz"), "--data", "sine", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = check_file(spec).model
    data = load_data("sine", model, "huber")
    baseline = float(np.mean(np.abs(data.y_test - data.y_train.mean())))
    assert report["mae"] < 0.12 < baseline / 4, (report, baseline)
    pred = Network(model, load_checkpoint(str(out / "weights.npz"), model)).predict(data.x_test)
    assert report["mae"] == pytest.approx(float(np.mean(np.abs(pred - data.y_test))), rel=1e-5)
