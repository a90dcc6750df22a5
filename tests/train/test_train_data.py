"""Data for nnc train: shaped for the spec, and refused with the array and problem named."""

import os

import numpy as np
import pytest

from nnc.cli import main
from nnc.lang.checker import check_source
from nnc.lang.errors import UserError
from nnc.training.data import load_data, pad_sequences


def _model(src):
    r = check_source("model m\n" + src)
    assert r.ok, r.diagnostics
    return r.model


IMAGE = _model("input image: float32[8, 8, 1]\nflatten\ndense 10 activation=softmax\n")
ROWS = _model("input rows: float32[8, 8]\nlstm 4\ndense 10 activation=softmax\n")
BINARY = _model("input x: float32[3]\ndense 1 activation=sigmoid\n")
TOKENS = _model("input t: int64[5] vocab=20\nembedding 4\nflatten\ndense 2 activation=softmax\n")
SCE = "sparse_categorical_crossentropy"


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return str(path)


def _refused(source, model, loss, match):
    with pytest.raises(UserError, match=match) as e:
        load_data(source, model, loss)
    assert e.value.exit_code == 1
    return e.value.message


def test_digits_for_images_and_row_sequences():
    d = load_data("digits", IMAGE, SCE)
    assert d.x_train.shape == (1437, 8, 8, 1) and d.x_test.shape == (360, 8, 8, 1)
    assert d.x_train.dtype == np.float32 and d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    assert sorted(set(d.y_train.tolist())) == list(range(10))
    r = load_data("digits", ROWS, SCE)
    assert r.x_train.shape == (1437, 8, 8)
    np.testing.assert_array_equal(r.x_train, d.x_train[..., 0])
    # 1,797 distinct images in all, as scikit-learn's load_digits has
    assert len(d.x_train) + len(d.x_test) == 1797


def test_uint8_images_scaled_and_channel_axis_added(tmp_path):
    x = np.arange(4 * 64, dtype=np.uint8).reshape(4, 8, 8)
    d = load_data(_npz(tmp_path, x_train=x, y_train=np.array([0, 1, 2, 3])), IMAGE, SCE)
    assert d.x_train.shape == (4, 8, 8, 1)
    np.testing.assert_allclose(d.x_train[..., 0], x / 255, rtol=1e-6)
    assert any("255" in n for n in d.notes)


def test_labels_out_of_range_named(tmp_path):
    x = np.zeros((3, 8, 8, 1), np.float32)
    msg = _refused(_npz(tmp_path, x_train=x, y_train=np.array([0, 12, 3])), IMAGE, SCE, "y_train")
    assert msg.startswith("y_train has labels up to 12, but the model outputs 10 classes")
    _refused(_npz(tmp_path, x_train=x, y_train=np.array([0, -1, 3])), IMAGE, SCE, "y_train has a negative label")
    _refused(_npz(tmp_path, x_train=x, y_train=np.array([0, 1.5, 3])), IMAGE, SCE, "not whole numbers")


def test_nan_shape_length_and_dtype_refused(tmp_path):
    x = np.zeros((3, 8, 8, 1), np.float32)
    x[1, 2, 3, 0] = np.nan
    _refused(_npz(tmp_path, x_train=x, y_train=np.zeros(3, int)), IMAGE, SCE, r"x_train has 1 NaN or Inf value")
    _refused(_npz(tmp_path, x_train=np.zeros((3, 7, 7)), y_train=np.zeros(3, int)), IMAGE, SCE,
             r"x_train has samples of shape \[7, 7\], but the input 'image' takes \[8, 8, 1\]")
    _refused(_npz(tmp_path, x_train=np.zeros((3, 8, 8)), y_train=np.zeros(4, int)), IMAGE, SCE,
             "x_train has 3 samples, but y_train has 4")
    _refused(_npz(tmp_path, x_train=np.array([["a"] * 64] * 3).reshape(3, 8, 8), y_train=np.zeros(3, int)),
             IMAGE, SCE, "x_train has dtype <U1")
    _refused(_npz(tmp_path, x_train=np.zeros((3, 8, 8))), IMAGE, SCE, "lacks y_train")
    ok = dict(x_train=np.zeros((3, 8, 8)), y_train=np.zeros(3, int))
    _refused(_npz(tmp_path, **ok, x_test=np.zeros((2, 8, 8)), y_test=np.array([1, 10])), IMAGE, SCE,
             "y_test has labels up to 10")


def test_targets_for_other_losses(tmp_path):
    x = np.zeros((3, 8, 8))
    d = load_data(_npz(tmp_path, x_train=x, y_train=np.array([2, 0, 9])), IMAGE, "categorical_crossentropy")
    np.testing.assert_array_equal(d.y_train, np.eye(10)[[2, 0, 9]])
    xb = np.zeros((4, 3))
    d = load_data(_npz(tmp_path, x_train=xb, y_train=np.array([0, 1, 1, 0])), BINARY, "binary_crossentropy")
    assert d.y_train.shape == (4, 1)
    _refused(_npz(tmp_path, x_train=xb, y_train=np.array([0, 2, 1, 0])), BINARY, "binary_crossentropy",
             r"y_train has values from 0 to 2, but binary_crossentropy takes targets in \[0, 1\]")
    _refused(_npz(tmp_path, x_train=xb, y_train=np.zeros((4, 2))), BINARY, "mse",
             r"y_train has targets of shape \[2\], but the model outputs \[1\]")


def test_csv_rows_with_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,label\n0.5,1,2,1\n3,4,5,0\n")
    d = load_data(str(path), BINARY, "binary_crossentropy")
    np.testing.assert_array_equal(d.x_train, [[0.5, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(d.y_train, [[1], [0]])
    assert d.x_test is None
    path.write_text("1,2,3,1\n1,2,1\n")
    _refused(str(path), BINARY, "binary_crossentropy", "row 2 has 3 columns, but the spec needs 4")
    path.write_text("1,2,3,1\n1,x,3,1\n")
    _refused(str(path), BINARY, "binary_crossentropy", "row 2 has a value that is not a number: 'x'")


def test_tokens_padded_and_vocab_checked(tmp_path):
    ragged = np.empty(3, dtype=object)
    ragged[:] = [[1, 2, 3, 4, 5, 6, 7], [8, 9], []]
    d = load_data(_npz(tmp_path, x_train=ragged, y_train=np.array([0, 1, 0])), TOKENS, SCE, allow_pickle=True)
    # Keras's pad_sequences: pad and truncate at the front
    np.testing.assert_array_equal(d.x_train, [[3, 4, 5, 6, 7], [0, 0, 0, 8, 9], [0, 0, 0, 0, 0]])
    assert d.x_train.dtype == np.int64
    _refused(_npz(tmp_path, x_train=np.array([[1, 2, 3, 4, 25]]), y_train=np.array([0])), TOKENS, SCE,
             r"x_train has token ids up to 25, but the input's vocab is 20")


@pytest.mark.reference
def test_pad_sequences_matches_keras():
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 50, size=n).tolist() for n in (0, 1, 4, 6, 9, 12)]
    for maxlen in (1, 6, 10):
        np.testing.assert_array_equal(pad_sequences(seqs, maxlen), keras.utils.pad_sequences(seqs, maxlen=maxlen))


def test_cli_refuses_bad_data_before_training(tmp_path, capsys):
    spec = tmp_path / "m.nnspec"
    spec.write_text("model m\ninput image: float32[8, 8, 1]\nflatten\ndense 10 activation=softmax\n")
    data = _npz(tmp_path, x_train=np.zeros((3, 8, 8)), y_train=np.array([0, 12, 3]))
    out = tmp_path / "run"
    rc = main(["train", str(spec), "--data", data, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "y_train has labels up to 12, but the model outputs 10 classes" in err
    assert "Traceback" not in err and not out.exists()
    rc = main(["train", str(spec), "--data", str(tmp_path / "nope.npz"), "--out", str(out)])
    assert rc == 2 and "no such file" in capsys.readouterr().err


def test_one_label_per_sample_for_a_per_step_model_says_so(tmp_path):
    seq = _model("input s: float32[6, 2]\nlstm 3 return_sequences=true\ndense 4 activation=softmax\n")
    x = np.zeros((3, 6, 2), np.float32)
    with pytest.raises(UserError, match=r"shaped \[6\] \(one class id per position\)") as e:
        load_data(_npz(tmp_path, x_train=x, y_train=np.array([0, 1, 2])), seq, SCE)
    assert "return_sequences=false" in e.value.help
    # per-sample labels of a per-sample model: the word is still "sample", and no such help
    msg = _refused(_npz(tmp_path, x_train=np.zeros((3, 8, 8, 1), np.float32), y_train=np.zeros((3, 2))), IMAGE, SCE,
                   "one class id per sample")
    assert "labels of shape [2]" in msg
