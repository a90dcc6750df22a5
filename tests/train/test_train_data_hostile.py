"""Hostile and broken data files: no code runs from a data file, and every bad file is a clear
error (exit 1) before any array is decompressed or any training starts."""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from nnc.cli import main
from nnc.lang.checker import check_source
from nnc.lang.errors import UserError
from nnc.lang.npz import read_npz
from nnc.training.data import load_data

TOKENS = check_source("model m\ninput t: int64[5] vocab=20\nembedding 4\nflatten\ndense 2 activation=softmax\n").model
IMAGE = check_source("model m\ninput x: float32[3]\ndense 2 activation=softmax\n").model
SCE = "sparse_categorical_crossentropy"


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickled_npz(tmp_path):
    marker = str(tmp_path / "pwned")
    arr = np.empty(2, dtype=object)
    arr[:] = [_Payload(marker), [1, 2]]
    path = tmp_path / "evil.npz"
    np.savez(path, x_train=arr, y_train=np.array([0, 1]))
    return str(path), marker


def _refused(path, match, model=IMAGE, **kw):
    with pytest.raises(UserError, match=match) as e:
        load_data(path, model, SCE, **kw)
    assert e.value.exit_code == 1
    return e.value


def test_object_arrays_are_refused_by_name_and_run_nothing(tmp_path):
    path, marker = _pickled_npz(tmp_path)
    err = _refused(path, r"array 'x_train' holds Python objects", model=TOKENS)
    assert "--allow-pickle" in err.help
    assert not os.path.exists(marker)


def test_train_and_eval_refuse_pickle_without_the_flag(tmp_path, capsys):
    path, marker = _pickled_npz(tmp_path)
    spec = tmp_path / "m.nnspec"
    spec.write_text("model m\ninput t: int64[5] vocab=20\nembedding 4\nflatten\ndense 2 activation=softmax\n")
    rc = main(["train", str(spec), "--data", path, "--out", str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "holds Python objects" in err and "Traceback" not in err
    np.savez(tmp_path / "w.npz", **{"embedding_1.embeddings": np.zeros((20, 4), np.float32),
                                    "dense_1.kernel": np.zeros((20, 2), np.float32),
                                    "dense_1.bias": np.zeros(2, np.float32)})
    rc = main(["eval", str(spec), "--weights", str(tmp_path / "w.npz"), "--data", path])
    assert rc == 1 and "holds Python objects" in capsys.readouterr().err
    assert not os.path.exists(marker)


def test_ragged_lists_load_with_allow_pickle(tmp_path):
    ragged = np.empty(2, dtype=object)
    ragged[:] = [[1, 2, 3], [4]]
    path = tmp_path / "r.npz"
    np.savez(path, x_train=ragged, y_train=np.array([0, 1]))
    d = load_data(str(path), TOKENS, SCE, allow_pickle=True)
    np.testing.assert_array_equal(d.x_train, [[0, 0, 1, 2, 3], [0, 0, 0, 0, 4]])


def test_ragged_float_tokens_are_not_truncated(tmp_path):
    ragged = np.empty(2, dtype=object)
    ragged[:] = [[1.0, 2.5], [4.0]]
    path = tmp_path / "r.npz"
    np.savez(path, x_train=ragged, y_train=np.array([0, 1]))
    _refused(str(path), "not token ids", model=TOKENS, allow_pickle=True)


def test_npy_named_npz(tmp_path):
    path = tmp_path / "x.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    _refused(str(path), r"not an \.npz archive \(it is a single \.npy array")


def test_member_that_is_not_npy(tmp_path):
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x_train.npy", _npy(np.zeros((2, 3))))
        z.writestr("notes.txt", "hello")
    _refused(str(path), r"member 'notes.txt' is not an \.npy array")


def _npy(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def test_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    # a valid v1 header declaring 10^12 elements, with the 24 bytes of data of a [2, 3] array
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    hdr = hdr + " " * (63 - (10 + len(hdr)) % 64) + "\n"
    raw = b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode() + bytes(24)
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("x_train.npy", raw)
        z.writestr("y_train.npy", _npy(np.array([0, 1])))
    _refused(str(path), r"declares \[1000000, 1000000\] \(4,000,000,000,000 bytes\)")


def test_corrupt_compressed_member(tmp_path):
    path = tmp_path / "x.npz"
    np.savez_compressed(path, x_train=np.arange(4000, dtype=np.float32).reshape(1000, 4), y_train=np.zeros(1000))
    data = bytearray(path.read_bytes())
    start = data.index(b"x_train.npy") + 200
    for i in range(start, start + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError) as e:
        read_npz(str(path), "data")
    assert e.value.exit_code == 1 and "cannot read data" in e.value.message


def test_random_bytes_and_mutations_never_crash(tmp_path):
    """Random bytes and random byte flips of a valid archive: a UserError or a result, nothing else."""
    rng = np.random.default_rng(0)
    good = tmp_path / "g.npz"
    np.savez_compressed(good, x_train=np.ones((4, 3), np.float32), y_train=np.array([0, 1, 0, 1]))
    base = good.read_bytes()
    path = tmp_path / "m.npz"
    for trial in range(150):
        if trial % 5 == 0:
            blob = rng.integers(0, 256, size=int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        else:
            b = bytearray(base)
            for i in rng.integers(0, len(b), size=int(rng.integers(1, 8))):
                b[i] = int(rng.integers(0, 256))
            blob = bytes(b)
        path.write_bytes(blob)
        try:
            load_data(str(path), IMAGE, SCE)
        except UserError as e:
            assert e.exit_code in (1, 2)


def test_csv_with_a_byte_order_mark_keeps_its_first_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufeff1,2,3,1\n4,5,6,0\n".encode("utf-8"))
    d = load_data(str(path), IMAGE, SCE)
    assert len(d.x_train) == 2
    np.testing.assert_array_equal(d.x_train[0], [1, 2, 3])


def test_complex_arrays_are_refused(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, x_train=np.ones((2, 3), np.complex64) * 1j, y_train=np.array([0, 1]))
    _refused(str(path), "takes real numbers")


def test_checkpoint_with_a_huge_array_is_refused_from_its_header(tmp_path):
    from nnc.lang.weights import load_checkpoint

    model = check_source("model m\ninput x: float32[3]\ndense 2\n").model
    path = tmp_path / "w.npz"
    # 256 MiB of zeros compress to a few hundred KB; the header alone says it cannot be dense_1.bias
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (67108864,), }"
    hdr = hdr + " " * (63 - (10 + len(hdr)) % 64) + "\n"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("dense_1.kernel.npy", _npy(np.zeros((3, 2), np.float32)))
        with z.open("dense_1.bias.npy", "w", force_zip64=True) as f:
            f.write(b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode())
            chunk = bytes(1 << 24)
            for _ in range(16):
                f.write(chunk)
    with pytest.raises(UserError, match=r"array 'dense_1.bias' has shape \[67108864\], but the spec needs \[2\]"):
        load_checkpoint(str(path), model)


def test_csv_field_over_the_csv_limit_and_huge_unsigned_ids(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,2,3," + "9" * 200_000 + "\n")
    _refused(str(path), "not a CSV file nnc can read")
    npz = tmp_path / "u.npz"
    np.savez(npz, x_train=np.array([[1, 2, 3, 4, 2**63 + 5]], dtype=np.uint64), y_train=np.array([0]))
    _refused(str(npz), r"token id of 9223372036854775813, larger than any vocab", model=TOKENS)


def test_absurdly_large_models_are_refused_before_allocating(tmp_path, capsys):
    spec = tmp_path / "big.nnspec"
    spec.write_text("model big\ninput x: float32[8, 8, 1]\nflatten\ndense 10000000000\ndense 10 activation=softmax\n")
    for cmd in (["compile", str(spec), "-o", str(tmp_path / "big.onnx")],
                ["train", str(spec), "--data", "digits", "--out", str(tmp_path / "run")]):
        assert main(cmd) == 1
        err = capsys.readouterr().err
        assert "750,000,000,010 parameters" in err and "more than the" in err and "Traceback" not in err
    assert not (tmp_path / "big.onnx").exists()


def test_initial_weights_are_drawn_in_chunks_as_one_float64_draw():
    """Drawing in float32 chunks keeps the values of one float64 draw (so seeds keep their
    meaning) without holding the float64 array."""
    from nnc.lang import weights as W

    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    old = W._CHUNK
    W._CHUNK = 1000
    try:
        got = W._uniform(rng_a, -0.3, 0.3, (70, 45))
    finally:
        W._CHUNK = old
    want = rng_b.uniform(-0.3, 0.3, size=(70, 45)).astype(np.float32)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_spec_files_are_read_with_a_bound(tmp_path):
    from nnc.lang.checker import check_file

    r = check_file("/dev/zero")  # never ends: refused after the bound, not read forever
    assert not r.ok and r.errors[0].code == "io" and "larger than" in r.errors[0].message


def test_state_with_metadata_of_the_wrong_types_is_refused(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    spec = tmp_path / "m.nnspec"
    spec.write_text("model m\ninput x: float32[8, 8, 1]\nflatten\ndense 10 activation=softmax\n")
    assert main(["train", str(spec), "--data", "digits", "--out", str(run), "--epochs", "1", "-q"]) == 0
    with np.load(run / "state.npz") as d:
        arrays = {k: d[k] for k in d.files}
    meta = json.loads(str(arrays["meta"]))
    for key, bad in (("epoch", "one"), ("config", {"optimizer": 3}), ("history", [1, 2])):
        broken = dict(meta, **{key: bad})
        np.savez(run / "state.npz", **{**arrays, "meta": np.array(json.dumps(broken))})
        assert main(["train", "--resume", str(run), "-q"]) == 1
        err = capsys.readouterr().err
        assert f"broken '{key}'" in err and "internal error" not in err


def test_more_reported_cases_are_clear_errors(tmp_path, capsys):
    """The rest of issue 10's list: a token id of 2^70, a state.npz lacking metadata keys, a
    weights file that is not a zip (no invitation to unpickle), string/bool/uint8 run inputs."""
    import json

    ragged = np.empty(2, dtype=object)
    ragged[:] = [[1, 2**70], [3]]
    path = tmp_path / "big_id.npz"
    np.savez(path, x_train=ragged, y_train=np.array([0, 1]))
    _refused(str(path), "not sequences of token ids", model=TOKENS, allow_pickle=True)

    spec = tmp_path / "m.nnspec"
    spec.write_text("model m\ninput x: float32[8, 8, 1]\nflatten\ndense 10 activation=softmax\n")
    run = tmp_path / "run"
    assert main(["train", str(spec), "--data", "digits", "--out", str(run), "--epochs", "1", "-q"]) == 0
    with np.load(run / "state.npz") as d:
        arrays = {k: d[k] for k in d.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["history"], meta["config"]
    np.savez(run / "state.npz", **{**arrays, "meta": np.array(json.dumps(meta))})
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "-q"]) == 1
    assert "lacks history, config in its metadata" in capsys.readouterr().err

    not_zip = tmp_path / "w.npz"
    not_zip.write_bytes(b"\x80\x04\x95 this is a pickle, not an archive")
    assert main(["compile", str(spec), "--weights", str(not_zip), "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "not an .npz archive" in err and "pickle" not in err.lower()

    assert main(["compile", str(spec), "-o", str(tmp_path / "m.onnx")]) == 0
    for arr in (np.array([["a"] * 64] * 2).reshape(2, 8, 8, 1), np.ones((2, 8, 8, 1), bool),
                np.ones((2, 8, 8, 1), np.uint8)):
        np.save(tmp_path / "x.npy", arr)
        capsys.readouterr()
        assert main(["run", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "x.npy")]) == 1
        err = capsys.readouterr().err
        assert f"input has dtype {arr.dtype}" in err and "internal error" not in err


def test_train_refuses_a_folder_holding_someone_elses_weights(tmp_path, capsys):
    # `nnc train --out .` next to an unrelated weights.npz / history.json: no run's state.npz
    # there, so those files are not nnc's to overwrite (issue 10: no destroyed file)
    spec = tmp_path / "m.nnspec"
    spec.write_text("model m\ninput x: float32[8, 8]\nflatten\ndense 10 activation=softmax\n")
    out = tmp_path / "here"
    out.mkdir()
    (out / "weights.npz").write_bytes(b"precious")
    (out / "history.json").write_text("precious")
    rc = main(["train", str(spec), "--data", "digits", "--out", str(out), "--epochs", "1", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "weights.npz, history.json but no training run" in err, err
    assert (out / "weights.npz").read_bytes() == b"precious" and (out / "history.json").read_text() == "precious"
    assert sorted(os.listdir(out)) == ["history.json", "weights.npz"]  # no lock, no state left behind
    # an empty folder is still a fine place for a new run
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", str(spec), "--data", "digits", "--out", str(empty), "--epochs", "1", "-q"]) == 0


def test_activations_beyond_memory_are_a_user_error(tmp_path, capsys):
    # 23 parameters, but a sample's activations need 10**13 x 3 floats: numpy refuses the
    # allocation (beyond any address space); that is the model's size, not a bug in nnc
    spec = tmp_path / "m.nnspec"
    spec.write_text("model m\ninput x: float32[4]\ndense 3\nrepeat_vector 10000000000000\nglobalavgpool\n"
                    "dense 2 activation=softmax\n")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.normal(size=(8, 4)).astype(np.float32), y_train=np.arange(8) % 2)
    rc = main(["train", str(spec), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "error: out of memory" in err and "internal error" not in err, err
    assert not (tmp_path / "run" / "weights.npz").exists()
