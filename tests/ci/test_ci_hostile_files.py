"""Random bytes and random mutations of valid files, fed to every command that reads them:
each run ends with exit 0, 1 or 2 and a message, never an internal error (exit 3) or a
traceback. (issue 10: "a property test that feeds random bytes and random mutations of valid
.npz/.csv/.onnx files to every command that reads them")"""

from __future__ import annotations

import numpy as np
import pytest

from nnc.cli import main

SPEC = "model m\ninput x: float32[8, 8, 1]\nflatten\ndense 4 activation=relu\ndense 10 activation=softmax\n"


def _mutations(base: bytes, rng, trials: int):
    for trial in range(trials):
        kind = trial % 4
        if kind == 0:  # random bytes
            yield rng.integers(0, 256, size=int(rng.integers(0, 600)), dtype=np.uint8).tobytes()
        elif kind == 1:  # truncated
            yield base[: int(rng.integers(0, len(base)))]
        else:  # bit flips and byte changes
            b = bytearray(base)
            for i in rng.integers(0, len(b), size=int(rng.integers(1, 6))):
                b[i] = int(rng.integers(0, 256)) if kind == 2 else b[i] ^ (1 << int(rng.integers(0, 8)))
            yield bytes(b)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    (d / "m.nnspec").write_text(SPEC)
    assert main(["train", str(d / "m.nnspec"), "--data", "digits", "--out", str(d / "run"), "--epochs", "1", "-q"]) == 0
    assert main(["compile", str(d / "m.nnspec"), "--weights", str(d / "run" / "weights.npz"),
                 "-o", str(d / "m.onnx")]) == 0
    np.save(d / "x.npy", np.zeros((2, 8, 8, 1), np.float32))
    rows = np.concatenate([np.random.default_rng(0).random((6, 64)), np.arange(6)[:, None] % 10], axis=1)
    np.savetxt(d / "d.csv", rows, delimiter=",", fmt="%g")
    return d


def _check(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc in (0, 1, 2), (argv, rc, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)


@pytest.mark.parametrize("target", ["weights", "data_npz", "data_csv", "onnx", "input_npy", "state"])
def test_mutated_files_never_crash_a_command(files, target, tmp_path, capsys):
    rng = np.random.default_rng(["weights", "data_npz", "data_csv", "onnx", "input_npy", "state"].index(target))
    d = files
    spec = str(d / "m.nnspec")
    source = {"weights": d / "run" / "weights.npz", "data_npz": d / "run" / "weights.npz",
              "data_csv": d / "d.csv", "onnx": d / "m.onnx", "input_npy": d / "x.npy",
              "state": d / "run" / "state.npz"}[target]
    base = source.read_bytes()
    for i, blob in enumerate(_mutations(base, rng, 24)):
        f = tmp_path / f"f{i}{source.suffix}"
        f.write_bytes(blob)
        if target == "weights":
            _check(capsys, ["compile", spec, "--weights", str(f), "-o", str(tmp_path / "o.onnx")])
            _check(capsys, ["eval", spec, "--weights", str(f), "--data", "digits"])
        elif target in ("data_npz", "data_csv"):
            _check(capsys, ["eval", spec, "--weights", str(d / "run" / "weights.npz"), "--data", str(f)])
        elif target == "onnx":
            _check(capsys, ["run", str(f), "--input", str(d / "x.npy")])
        elif target == "input_npy":
            _check(capsys, ["run", str(d / "m.onnx"), "--input", str(f)])
        else:
            run = tmp_path / f"run{i}"
            run.mkdir()
            (run / "state.npz").write_bytes(blob)
            _check(capsys, ["train", "--resume", str(run), "--data", "digits", "-q"])
