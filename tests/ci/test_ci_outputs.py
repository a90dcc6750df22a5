"""The output policy every writing command shares (nnc.lang.weights.atomic_open): nothing but the
named file changes, symlinks and hard links survive, devices and pipes are written in place,
inputs are never overwritten, and a place that cannot be written is a clear error (exit 2)."""

import os
import stat

import numpy as np
import pytest

from nnc.cli import main

SPEC = "model m\ninput x: float32[3]\ndense 2 activation=softmax\n"


@pytest.fixture
def spec(tmp_path):
    p = tmp_path / "m.nnspec"
    p.write_text(SPEC)
    return p


def test_compile_onto_its_own_spec_is_refused(spec, capsys):
    rc = main(["compile", str(spec), "-o", str(spec)])
    assert rc == 2 and "it is the input" in capsys.readouterr().err
    assert spec.read_text() == SPEC


def test_compile_onto_a_symlink_writes_its_target_and_keeps_the_link(spec, tmp_path):
    target = tmp_path / "real.onnx"
    target.write_bytes(b"old")
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    assert main(["compile", str(spec), "-o", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes()[:4] != b"old" and len(target.read_bytes()) > 100


def test_run_to_dev_null_and_to_a_fifo_writes_in_place(spec, tmp_path):
    model = tmp_path / "m.onnx"
    assert main(["compile", str(spec), "-o", str(model)]) == 0
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 3), np.float32))
    assert main(["run", str(model), "--input", str(x), "-o", os.devnull]) == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so the writer's open does not block
    try:
        assert main(["run", str(model), "--input", str(x), "-o", str(fifo)]) == 0
        data = os.read(r, 1 << 16)
    finally:
        os.close(r)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and data.startswith(b"\x93NUMPY")


def test_run_refuses_writing_over_its_input(spec, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    assert main(["compile", str(spec), "-o", str(model)]) == 0
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 3), np.float32))
    before = x.read_bytes()
    assert main(["run", str(model), "--input", str(x), "-o", str(x)]) == 2
    assert "it is the input" in capsys.readouterr().err and x.read_bytes() == before


def test_run_into_a_read_only_folder_or_onto_a_folder_is_a_clear_error(spec, tmp_path, capsys):
    if os.geteuid() == 0:
        ro = None  # root writes anywhere: only the folder case can be checked
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
    model = tmp_path / "m.onnx"
    assert main(["compile", str(spec), "-o", str(model)]) == 0
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 3), np.float32))
    assert main(["run", str(model), "--input", str(x), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "it is a folder" in err and "Traceback" not in err
    if ro is not None:
        assert main(["run", str(model), "--input", str(x), "-o", str(ro / "y.npy")]) == 2
        assert "cannot write" in capsys.readouterr().err


def test_run_to_standard_output(spec, tmp_path, capfdbinary):
    model = tmp_path / "m.onnx"
    assert main(["compile", str(spec), "-o", str(model)]) == 0
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 3), np.float32))
    capfdbinary.readouterr()
    assert main(["run", str(model), "--input", str(x), "-o", "-"]) == 0
    assert capfdbinary.readouterr().out.startswith(b"\x93NUMPY")


def test_fmt_keeps_symlinks_and_hard_links(tmp_path):
    real = tmp_path / "real.nnspec"
    real.write_text("model m\ninput x: float32[3]\ndense   2\n")
    link = tmp_path / "link.nnspec"
    link.symlink_to(real)
    hard = tmp_path / "hard.nnspec"
    os.link(real, hard)
    assert main(["fmt", str(link)]) == 0
    assert link.is_symlink()
    assert "dense 2" in real.read_text()
    assert os.stat(real).st_ino == os.stat(hard).st_ino and hard.read_text() == real.read_text()


def test_fmt_accepts_a_byte_order_mark_as_check_does(tmp_path):
    p = tmp_path / "bom.nnspec"
    p.write_bytes("\ufeffmodel m\n\ninput x: float32[3]\n\ndense 2\n".encode())
    assert main(["check", str(p)]) == 0
    assert main(["fmt", "--check", str(p)]) == 0


def test_diagnostics_split_the_source_once_per_file():
    """Rendering was quadratic in the number of errors (each diagnostic re-split the source)."""
    from nnc.lang.checker import check_source
    from nnc.lang.diagnostics import render, source_lines
    from nnc.tools.report import sarif_log

    text = "model m\ninput x: float32[3]\n" + "dense 0\n" * 2000
    r = check_source(text, "many.nnspec")
    assert len(r.errors) == 2000
    before = source_lines.cache_info().misses
    lines = [render(d, r.source) for d in r.diagnostics]
    sarif_log([r])
    assert source_lines.cache_info().misses == before + 1
    assert lines[-1].splitlines()[1] == "dense 0"
