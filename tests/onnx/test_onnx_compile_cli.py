"""`nnc compile`: outputs, weights from a checkpoint or initialized, refusals, atomic writes."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from nnc.cli import main
from nnc.lang.weights import init_weights, save_checkpoint

from onnx_cases import CONTRACT, contract_model, ort_run, random_input, random_weights

MNIST = next(p for p in CONTRACT if p.stem == "mnist_convnet")
IMDB = next(p for p in CONTRACT if p.stem == "imdb_gru")


def test_default_output_is_beside_the_spec(tmp_path):
    spec = tmp_path / "mnist_convnet.nnspec"
    shutil.copy(MNIST, spec)
    assert main(["compile", str(spec)]) == 0
    onnx.checker.check_model(str(tmp_path / "mnist_convnet.onnx"), full_check=True)


def test_weights_from_a_checkpoint_are_compiled_in(tmp_path):
    model = contract_model(IMDB)
    w = random_weights(model, 7)
    save_checkpoint(str(tmp_path / "w.npz"), w)
    out = tmp_path / "m.onnx"
    assert main(["compile", str(IMDB), "-o", str(out), "--weights", str(tmp_path / "w.npz"), "--opset", "21"]) == 0
    m = onnx.load(str(out))
    assert m.opset_import[0].version == 21
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    np.testing.assert_array_equal(inits["embedding_1.embeddings"], w["embedding_1.embeddings"])
    np.testing.assert_array_equal(inits["dense_1.kernel"], w["dense_1.kernel"])


def test_without_weights_keras_initialization_from_the_seed(tmp_path):
    model = contract_model(IMDB)
    out = tmp_path / "m.onnx"
    assert main(["compile", str(IMDB), "-o", str(out), "--seed", "5"]) == 0
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    w = init_weights(model, 5)
    np.testing.assert_array_equal(inits["embedding_1.embeddings"], w["embedding_1.embeddings"])
    # GRU biases start at zero, as in Keras
    np.testing.assert_array_equal(inits["gru_1.B"], 0)
    y = ort_run(onnx.load(str(out)), random_input(model))
    assert np.isfinite(y).all() and ((0 < y) & (y < 1)).all()


def test_lstm_forget_bias_starts_at_one(tmp_path):
    out = tmp_path / "m.onnx"
    assert main(["compile", str(next(p for p in CONTRACT if p.stem == "imdb_lstm")), "-o", str(out)]) == 0
    b = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}["lstm_1.B"][0]
    u = 32  # ONNX gate order i, o, f, c: the forget block is the third
    np.testing.assert_array_equal(b[2 * u:3 * u], 1)
    np.testing.assert_array_equal(np.delete(b, np.s_[2 * u:3 * u]), 0)


@pytest.mark.parametrize("change,message", [
    (lambda w: w.pop("gru_1.recurrent_kernel"), r"missing array 'gru_1.recurrent_kernel' \(expected shape \[32, 96\]\)"),
    (lambda w: w.__setitem__("extra.kernel", np.zeros((2, 2), np.float32)), r"unexpected array 'extra.kernel' \(shape \[2, 2\]\)"),
    (lambda w: w.__setitem__("gru_1.bias", np.zeros((96,), np.float32)), r"array 'gru_1.bias' has shape \[96\], but the spec needs \[2, 96\]"),
    (lambda w: w.__setitem__("dense_1.bias", np.zeros((1,), np.float64)), r"array 'dense_1.bias' has dtype float64"),
    (lambda w: w["dense_1.kernel"].__setitem__((0, 0), np.nan), r"array 'dense_1.kernel' has 1 NaN or Inf value"),
])
def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path, capsys, change, message):
    import re

    w = random_weights(contract_model(IMDB))
    change(w)
    np.savez(tmp_path / "w.npz", **w)
    out = tmp_path / "m.onnx"
    assert main(["compile", str(IMDB), "-o", str(out), "--weights", str(tmp_path / "w.npz")]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists()


def test_refusals(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["compile", str(MNIST), "-o", str(out), "--opset", "30"]) == 2
    assert main(["compile", str(tmp_path / "none.nnspec"), "-o", str(out)]) == 2
    assert main(["compile", str(MNIST), "-o", str(out), "--weights", str(tmp_path / "none.npz")]) == 2
    bad = tmp_path / "bad.nnspec"
    bad.write_text("model bad\ninput x: float32[4]\nconv2d 3 kernel=3\n")
    assert main(["compile", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--opset 30 is not supported" in err and "no such file" in err and "bad.nnspec:3" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_interrupted_compile_leaves_no_file(tmp_path, monkeypatch):
    # Ctrl-C after the bytes are written but before they are in place: nothing half-written
    import os

    written = []

    def interrupt(fd):
        written.append(os.fstat(fd).st_size)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    assert main(["compile", str(MNIST), "-o", str(tmp_path / "m.onnx")]) == 130
    assert written and written[0] > 300_000  # the interrupt came with the model in the temporary
    assert list(tmp_path.iterdir()) == []
