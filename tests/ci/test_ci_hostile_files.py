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


# --- a second probe (issue 10): hostile values and signals, not random bytes ---------------


def test_summary_and_compile_of_dims_beyond_a_float(tmp_path, capsys):
    # a 400-digit dim: sizes in bytes overflow a float; both commands must still answer
    dim = 10**400
    spec = tmp_path / "huge.nnspec"
    spec.write_text(f"model huge\ninput x: float32[{dim}]\ndense 3\n")
    rc = main(["summary", str(spec)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"{4 * dim // 1024**4:,}.0 TiB" in out  # exact integer arithmetic, as a float cannot hold it
    rc = main(["compile", str(spec), "-o", str(tmp_path / "h.onnx")])
    err = capsys.readouterr().err
    assert rc == 1 and f"{(4 * (3 * dim + 3)) >> 30:,} GiB" in err, err
    assert not (tmp_path / "h.onnx").exists()


def test_human_bytes_small_values_unchanged():
    from nnc.tools.summary import human_bytes

    assert [human_bytes(n) for n in (0, 1023, 1280, 3 * 1024**2, 5 * 1024**5)] == \
        ["0 B", "1,023 B", f"{1280 / 1024:,.1f} KiB", "3.0 MiB", f"{5 * 1024:,.1f} TiB"]


def test_compile_refuses_a_negative_seed(tmp_path, capsys):
    (tmp_path / "m.nnspec").write_text(SPEC)
    rc = main(["compile", str(tmp_path / "m.nnspec"), "--seed", "-1", "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "--seed must be 0 or more" in err, err
    assert list(tmp_path.iterdir()) == [tmp_path / "m.nnspec"]


def test_graph_png_of_a_very_long_name(tmp_path, capsys):
    # matplotlib lays out every glyph of a text: a 200,000-letter name used to take minutes
    spec = tmp_path / "m.nnspec"
    spec.write_text("model " + "n" * 200_000 + "\ninput x: float32[4]\n" + "l" * 100_000 + ": dense 3\n")
    rc = main(["graph", str(spec), "-o", str(tmp_path / "m.png")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigterm_during_training_checkpoints_and_leaves_no_temporary_file(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "m.nnspec").write_text(SPEC)
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "nnc.cli", "train", str(tmp_path / "m.nnspec"), "--data", "digits",
                          "--out", str(run), "--epochs", "100000", "-q"], stderr=subprocess.PIPE, text=True)
    while not (run / "state.npz").exists() and p.poll() is None:  # wait for the first checkpoint
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    err = p.communicate()[1]
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")], os.listdir(run)
    with np.load(run / "weights.npz") as w:
        assert sorted(w.files) == ["dense_1.bias", "dense_1.kernel", "dense_2.bias", "dense_2.kernel"]


def test_a_diagnostic_never_echoes_terminal_control_sequences(tmp_path, capsys):
    # a spec line with ESC sequences (set the window title, clear the screen): the excerpt shows
    # them as U+FFFD, one column each, and the caret still points at the first one
    spec = tmp_path / "m.nnspec"
    spec.write_text("model m\ninput x: float32[4]\ndense 3 \x1b]0;pwned\x07\x1b[2J\n")
    for fmt in ("text", "github"):
        rc = main(["check", "--format", fmt, str(spec)])
        out, err = capsys.readouterr()
        assert rc == 1 and "\x1b" not in out + err and "\x07" not in out + err, (out, err)
    rc = main(["check", str(spec)])
    out, err = capsys.readouterr()
    lines = (out + err).splitlines()
    excerpt = lines.index("dense 3 \ufffd]0;pwned\ufffd\ufffd[2J")
    assert lines[excerpt + 1] == " " * 8 + "^"
