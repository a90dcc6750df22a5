"""Flush-to-zero and denormals-are-zero (nnc.engines.numpy.fpenv): set in the threads that compute while nnc
trains or infers, the caller's MXCSR back afterwards, NNC_SUBNORMALS=keep to keep IEEE
subnormals, and onnxruntime sessions made by nnc likewise. Whether a product flushed is read
off its result: 1e-20 * 1e-20 = 1e-40 is subnormal in float32 (the smallest normal is 1.2e-38)."""

import numpy as np
import pytest

from nnc.engines.numpy import fpenv
from nnc.engines.numpy import Network, parallel
from nnc.lang.checker import check_source
from nnc.lang.weights import init_weights

pytestmark = pytest.mark.skipif(not fpenv.available(), reason=f"MXCSR cannot be set here: {fpenv.why_unavailable}")

TINY = np.full(4096, 1e-20, np.float32)  # each product 1e-40: subnormal
SUBNORMAL = np.full(4096, 1e-39, np.float32)  # already subnormal: DAZ reads it as 0


def control() -> int:
    """The calling thread's MXCSR without its status bits (0-5: exceptions seen so far, sticky,
    set by any underflow), that is, the modes: what nnc sets and puts back."""
    return fpenv.get_mxcsr() & ~0x3F


def flushed() -> bool:
    product = TINY * TINY
    assert product.dtype == np.float32
    if (product == 0).all():
        return True
    assert product[0] == np.float32(1e-40) and product[0] > 0  # IEEE: the subnormal, kept exactly
    return False


def denormal_inputs_read_as_zero() -> bool:
    return bool((SUBNORMAL * np.float32(1e3) == 0).all())


@pytest.fixture(autouse=True)
def default_switch(monkeypatch):
    monkeypatch.delenv(fpenv.ENV, raising=False)


def test_flags_are_set_inside_and_the_callers_come_back():
    before = control()
    assert before & fpenv.FLAGS == 0 and not flushed() and not denormal_inputs_read_as_zero()
    with fpenv.flush_subnormals():
        assert control() == before | fpenv.FLAGS
        assert flushed() and denormal_inputs_read_as_zero()
        with fpenv.flush_subnormals():  # nested: changes nothing, and leaves the flags on
            pass
        assert fpenv.get_mxcsr() & fpenv.FLAGS == fpenv.FLAGS
    assert control() == before and not flushed()
    with pytest.raises(ZeroDivisionError):
        with fpenv.flush_subnormals():
            1 / 0
    assert control() == before


def test_a_caller_that_set_the_flags_itself_keeps_them():
    before = control()
    try:
        fpenv.set_mxcsr(before | fpenv.FTZ)  # the caller's own choice: FTZ without DAZ
        with fpenv.flush_subnormals():
            assert denormal_inputs_read_as_zero()
        assert control() == before | fpenv.FTZ and flushed() and not denormal_inputs_read_as_zero()
    finally:
        fpenv.set_mxcsr(before)


def test_keep_switch(monkeypatch):
    monkeypatch.setenv(fpenv.ENV, "keep")
    with fpenv.flush_subnormals(blas_workers=True):
        assert not flushed()
    with fpenv.flush_subnormals(enabled=True):
        assert flushed()


def test_chunk_threads_compute_under_the_callers_flags():
    def work(i):
        return fpenv.get_mxcsr(), flushed()

    items = list(range(4))
    with fpenv.flush_subnormals():
        inside = parallel.run(work, items)
    outside = parallel.run(work, items)  # the same pool threads: their own flags were put back
    assert all(m & fpenv.FLAGS == fpenv.FLAGS and f for m, f in inside)
    assert all(m & fpenv.FLAGS == 0 and not f for m, f in outside)


def test_blas_worker_threads_flush_during_training_and_not_after():
    a = np.full((512, 512), 1e-20, np.float32)  # a product big enough for OpenBLAS to split over its threads
    assert not (a @ a == 0).any()
    with fpenv.flush_subnormals(blas_workers=True):
        assert (a @ a == 0).all()  # every thread's share flushed
    assert not (a @ a == 0).any()  # and none after: the workers gave the flags up


def test_inference_flushes_and_leaves_the_flags_as_they_were():
    model = check_source("model m\ninput x: float32[64]\ndense 64\n").model
    weights = init_weights(model, 0)
    weights["dense_1.kernel"] = np.full((64, 64), 1e-20, np.float32)
    x = np.full((32, 64), 1e-20, np.float32)
    net = Network(model, weights)
    before = control()
    assert (net.predict(x) == 0).all()  # 64 products of 1e-40, each flushed
    assert control() == before
    assert (net.forward(x) > 0).all()  # forward alone runs under the caller's flags: IEEE
    np.testing.assert_allclose(net.forward(x), np.float32(64 * 1e-40), rtol=1e-2)


def _mul_model(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["y"])], "mul", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.parametrize("switch", ["flush", "keep"])
def test_onnxruntime_sessions_follow_the_switch(tmp_path, monkeypatch, switch):
    pytest.importorskip("onnxruntime")
    from nnc.onnx.runtime import Runner

    if switch == "keep":
        monkeypatch.setenv(fpenv.ENV, "keep")
    _mul_model(tmp_path / "mul.onnx")
    before = control()
    runner = Runner(str(tmp_path / "mul.onnx"))
    assert control() == before  # onnxruntime's own setting of the creating thread is undone
    out = runner.run(np.full((20_000, 64), 1e-20, np.float32))  # split over onnxruntime's threads
    assert control() == before
    assert (out == 0).all() if switch == "flush" else (out > 0).all()


def test_nnc_train_keep_subnormals_flag(tmp_path, monkeypatch):
    from nnc.cli import main

    monkeypatch.setenv(fpenv.ENV, "flush")  # restored when the test ends
    (tmp_path / "s.nnspec").write_text("model s\ninput x: float32[3]\ndense 2 activation=softmax\n")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.normal(size=(8, 3)).astype(np.float32), y_train=rng.integers(0, 2, 8))
    args = ["train", str(tmp_path / "s.nnspec"), "--data", str(tmp_path / "d.npz"), "-q"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert not fpenv.keep_subnormals()
    assert main(args + ["--out", str(tmp_path / "b"), "--keep-subnormals"]) == 0
    assert fpenv.keep_subnormals()
    with fpenv.flush_subnormals():
        assert not flushed()


def test_blas_workers_are_left_alone_while_another_thread_runs():
    import threading

    release = threading.Event()
    other = threading.Thread(target=release.wait)  # could be inside a product: restarting is not safe
    other.start()
    try:
        assert parallel.BLAS.restart_workers() is False
    finally:
        release.set()
        other.join()
