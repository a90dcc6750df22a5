"""The PyTorch engine in the shared training loop (issue 12): `nnc train --engine torch` writes
the same run as the NumPy engine (history, weights, checkpoints), a run resumes on either engine,
nnc.fit takes engine=, and under torchrun (2 processes, gloo) DistributedDataParallel trains the
global batch as one process does, rank 0 alone writing and printing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nnc  # noqa: E402
from nnc.cli import main  # noqa: E402
from nnc.lang.checker import check_source  # noqa: E402
from nnc.lang.weights import load_checkpoint  # noqa: E402
from nnc.training.data import Dataset  # noqa: E402
from nnc.training.loop import Trainer  # noqa: E402

# no dropout: both engines then compute the same steps up to float32 rounding; batchnorm's
# statistics are the global batch's under torchrun too (each process holds a share of it)
SPEC = """model small
input image: float32[8, 8, 1]
conv2d 4 kernel=3 activation=relu
batchnorm
maxpool2d 2
flatten
dense 10 activation=softmax
train {
  loss sparse_categorical_crossentropy
  optimizer sgd lr=0.05 momentum=0.9
  metrics accuracy
  epochs 2
  batch_size 32
  validation_split 0.2
  seed 3
}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("torch_train")
    spec = d / "small.nnspec"
    spec.write_text(SPEC)
    rng = np.random.default_rng(0)
    # 100 samples, 80 train: batches of 32, 32 and 16 (split 16/16/8 per process under torchrun)
    x = rng.random((100, 8, 8, 1), dtype=np.float32)
    y = (x.reshape(100, -1)[:, :10].argmax(1)).astype(np.int64)
    data = d / "data.npz"
    np.savez(data, x_train=x, y_train=y)
    return spec, data, d


def _train(spec, data, out, *flags):
    assert main(["train", str(spec), "--data", str(data), "--out", str(out), "--quiet", *flags]) == 0
    history = json.loads((out / "history.json").read_text())
    history.pop("schema_version", None)
    return history


def _close(a: dict, b: dict, rtol: float):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=rtol * 1e-2, err_msg=k)


def test_the_torch_engine_writes_the_numpy_engines_run(files):
    spec, data, d = files
    h_np = _train(spec, data, d / "np")
    h_t = _train(spec, data, d / "t", "--engine", "torch")
    _close(h_t, h_np, 1e-4)
    assert sorted(os.listdir(d / "t")) == sorted(os.listdir(d / "np"))
    model = check_source(SPEC, "<s>").model
    w_np, w_t = load_checkpoint(str(d / "np" / "weights.npz"), model), load_checkpoint(str(d / "t" / "weights.npz"), model)
    for k in w_np:
        np.testing.assert_allclose(w_t[k], w_np[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # the weights it wrote compile and give the same predictions as the NumPy engine's
    assert main(["compile", str(spec), "--weights", str(d / "t" / "weights.npz"), "-o", str(d / "t.onnx")]) == 0


def test_a_run_resumes_on_the_other_engine(files):
    spec, data, d = files
    full = _train(spec, data, d / "full3", "--epochs", "3")
    _train(spec, data, d / "mixed", "--epochs", "1")  # NumPy engine's epoch 1 ...
    assert main(["train", "--resume", str(d / "mixed"), "--epochs", "3", "--engine", "torch", "--quiet"]) == 0
    mixed = json.loads((d / "mixed" / "history.json").read_text())  # ... then PyTorch's epochs 2 and 3
    mixed.pop("schema_version", None)
    _close(mixed, full, 1e-4)


def test_an_interrupted_torch_run_resumes_to_the_same_weights(files, tmp_path):
    spec, data, d = files
    model = check_source(SPEC, "<s>").model
    rng = np.random.default_rng(0)
    x = rng.random((100, 8, 8, 1), dtype=np.float32)
    ds = Dataset("mem", x, (x.reshape(100, -1)[:, :10].argmax(1)).astype(np.int64))
    full = Trainer(model, model.train, ds, str(tmp_path / "full"), engine="torch")
    full.fit()

    class Stop(KeyboardInterrupt):
        pass

    def interrupt(epoch, step):
        if (epoch, step) == (1, 1):
            raise Stop

    cut = Trainer(model, model.train, ds, str(tmp_path / "cut"), engine="torch", on_step=interrupt)
    with pytest.raises(Stop):
        cut.fit()
    from nnc.training.loop import read_state

    arrays, meta = read_state(str(tmp_path / "cut"))
    assert meta["epoch"] == 1
    resumed = Trainer(model, model.train, ds, str(tmp_path / "cut"), engine="torch")
    resumed.restore(arrays, meta)
    resumed.fit()
    assert resumed.state.history == full.state.history
    for k, v in full.net.weights.items():
        np.testing.assert_array_equal(resumed.net.weights[k], v, err_msg=k)


def test_fit_takes_the_engine(files):
    model = check_source(SPEC, "<s>").model
    rng = np.random.default_rng(1)
    x = rng.random((60, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 60)
    a = nnc.fit(model, x, y, epochs=2, verbose=0)
    b = nnc.fit(model, x, y, epochs=2, verbose=0, engine="torch")
    _close(b.history, a.history, 1e-4)
    for k in a.weights:
        np.testing.assert_allclose(b.weights[k], a.weights[k], rtol=1e-4, atol=1e-5, err_msg=k)


def _torchrun(n: int, *args, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           "-m", "nnc", "train", *args]
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=600)


def test_torchrun_trains_the_global_batch_as_one_process_and_resumes(files):
    spec, data, d = files
    one = _train(spec, data, d / "one3", "--engine", "torch", "--epochs", "3")
    out = d / "ddp"
    r = _torchrun(2, str(spec), "--data", str(data), "--out", str(out), "--engine", "torch", "--epochs", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    # rank 0 alone prints and writes: one line per epoch, one set of files
    assert r.stdout.count("epoch 1/2") == 1 and r.stdout.count("epoch 2/2") == 1, r.stdout
    assert {"weights.npz", "history.json", "state.npz", "curves.png"} <= set(os.listdir(out))
    r = _torchrun(2, "--resume", str(out), "--epochs", "3", "--engine", "torch")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("epoch 3/3") == 1, r.stdout
    h = json.loads((out / "history.json").read_text())
    h.pop("schema_version", None)
    _close(h, one, 1e-4)
    model = check_source(SPEC, "<s>").model
    w1, w2 = load_checkpoint(str(d / "one3" / "weights.npz"), model), load_checkpoint(str(out / "weights.npz"), model)
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_several_processes_need_the_torch_engine(files, tmp_path, capsys, monkeypatch):
    spec, data, _ = files
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["train", str(spec), "--data", str(data), "--out", str(tmp_path / "r")]) != 0
    err = capsys.readouterr().err
    assert "PyTorch engine" in err and "--engine torch" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_device_errors_are_clear(files, tmp_path, capsys):
    spec, data, _ = files
    assert main(["train", str(spec), "--data", str(data), "--out", str(tmp_path / "a"), "--device", "cuda"]) != 0
    assert "--engine torch" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", str(spec), "--data", str(data), "--out", str(tmp_path / "b"), "--engine", "torch",
                     "--device", "cuda"]) != 0
        err = capsys.readouterr().err
        assert "no usable CUDA GPU" in err and "Traceback" not in err


def test_without_torch_the_engine_names_the_install(files, tmp_path):
    spec, data, _ = files
    code = ("import sys; sys.modules['torch'] = None\n"
            "from nnc.cli import main\n"
            f"sys.exit(main(['train', {str(spec)!r}, '--data', {str(data)!r}, '--out', {str(tmp_path / 'r')!r}, "
            "'--engine', 'torch']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0 and "pip install 'nnc[torch]'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.cuda
def test_cli_trains_on_cuda_as_on_the_cpu(files):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    spec, data, d = files
    cpu = _train(spec, data, d / "cpu", "--engine", "torch")
    gpu = _train(spec, data, d / "gpu", "--engine", "torch", "--device", "cuda")
    _close(gpu, cpu, 1e-3)
    model = check_source(SPEC, "<s>").model
    t = Trainer(model, model.train, Dataset("m", np.zeros((4, 8, 8, 1), np.float32), np.zeros(4, np.int64)), None,
                engine="torch", device="cuda")
    assert all(p.is_cuda for p in t.net.net.parameters())
