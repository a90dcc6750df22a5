"""parallel.Background: the LSTM's and GRU's long products (input projections ahead of the
time loop, backward's factors and weight and input gradients behind it) run on another core
while the loop goes on; with one core the same tasks run inline. What must hold: the tasks run
in order, their failures reach the caller, nothing depends on where they ran (the layers'
outputs and gradients are the same either way, and match the general cores'), and the pool is
free again afterwards."""

import os
import signal
import threading

import numpy as np
import pytest

from nnc.engines.numpy import fpenv, parallel
from nnc.engines.numpy.kernels import _GruFast, _GruGeneral, _LstmFast, _LstmGeneral
from nnc.lang.checker import check_source

threaded = pytest.mark.skipif(not parallel.BLAS.controllable, reason="no control of BLAS's threads: no helper")


@threaded
def test_tasks_run_in_order_on_another_thread(monkeypatch):
    me = threading.get_ident()
    seen = []

    def task(i):
        seen.append(i)
        return i, threading.get_ident()

    with parallel.Background(threads=2) as bg:
        for i in range(20):
            bg.submit(task, i)
        bg.wait(5)
        assert seen[:5] == [0, 1, 2, 3, 4]
        out = bg.results()
    assert [i for i, _ in out] == list(range(20)) == seen
    assert {t for _, t in out} != {me} and len({t for _, t in out}) == 1
    # the pool is free again: a run shares its items out over threads
    assert len({t for t in parallel.run(lambda _: threading.get_ident(), [0, 1])}) == 2


def test_one_core_runs_each_task_at_once_in_the_caller():
    me = threading.get_ident()
    with parallel.Background(threads=1) as bg:
        bg.submit(lambda: threading.get_ident())
        assert bg._done == [me]  # done before submit returned
        bg.wait(1)
        assert bg.results() == [me]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_failing_task_reaches_the_caller_and_the_rest_are_skipped(threads):
    ran = []

    def task(i):
        ran.append(i)
        if i == 2:
            raise ValueError("task 2")
        return i

    with pytest.raises(ValueError, match="task 2"):
        with parallel.Background(threads=threads) as bg:
            for i in range(5):
                bg.submit(task, i)
            bg.results()
    assert 2 in ran and 3 not in ran and 4 not in ran
    with pytest.raises(ValueError, match="task 2"):
        with parallel.Background(threads=threads) as bg:
            for i in range(5):
                bg.submit(task, i)
            bg.wait(5)  # waiting for a task that will never be done raises instead of hanging
    assert parallel._busy.acquire(blocking=False)  # released, even after the failures
    parallel._busy.release()


@threaded
@pytest.mark.skipif(not fpenv.available(), reason="MXCSR cannot be set here")
def test_the_helper_computes_under_the_callers_flags():
    tiny = np.full(64, 1e-20, np.float32)
    with fpenv.flush_subnormals(), parallel.Background(threads=2) as bg:
        bg.submit(lambda: (threading.get_ident(), bool((tiny * tiny == 0).all())))
        (ident, flushed), = bg.results()
    assert ident != threading.get_ident() and flushed


def _layer(kind, steps, units=5, features=3, return_sequences=False, options=""):
    spec = (f"model m\ninput x: float32[{steps}, {features}]\n"
            f"{kind} {units} return_sequences={'true' if return_sequences else 'false'}{options}\n")
    return check_source(spec).model.layers[0]


CORES = {"lstm": (_LstmFast, _LstmGeneral, 4, ""), "gru": (_GruFast, _GruGeneral, 3, ""),
         "gru reset_after=false": (_GruFast, _GruGeneral, 3, " reset_after=false")}


@pytest.mark.parametrize("kind", CORES)
@pytest.mark.parametrize("steps, return_sequences", [(1, False), (37, False), (37, True), (64, True)])
def test_recurrent_numbers_do_not_depend_on_the_helper_and_match_the_general_core(monkeypatch, kind, steps,
                                                                                  return_sequences):
    fast, general, gates, options = CORES[kind]
    layer = _layer(kind.split()[0], steps, return_sequences=return_sequences, options=options)
    rng = np.random.default_rng(steps)
    u, d = layer.options["units"], layer.input_shape[-1]
    bias = (2, gates * u) if kind == "gru" else gates * u  # reset_after=true: input and recurrent biases
    w = {"kernel": rng.normal(size=(d, gates * u)), "recurrent_kernel": rng.normal(size=(u, gates * u)) * 0.5,
         "bias": rng.normal(size=bias)}
    x = rng.normal(size=(19, steps, d))
    dy = rng.normal(size=(19, steps, u) if return_sequences else (19, u))
    runs = []
    for threads in ("1", "2"):
        monkeypatch.setenv("NNC_THREADS", threads)
        core = fast(layer)
        for training in (True, False):  # training: the factors made in forward; else in backward
            y, cache = core.forward(x, w, training=training)
            dx, g = core.backward(dy, w, cache)
            runs.append((y, dx, g))
    reference = general(layer)  # the layer's other implementation, gate by gate as Keras writes it
    y, cache = reference.forward(x, w, training=True, masks=(None, None))
    runs.append((y, *reference.backward(dy, w, cache)))
    y0, dx0, g0 = runs[0]
    for y, dx, g in runs[1:]:
        np.testing.assert_allclose(y, y0, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(dx, dx0, rtol=1e-10, atol=1e-12)
        for k in w:
            np.testing.assert_allclose(g[k], g0[k], rtol=1e-10, atol=1e-12, err_msg=k)


@threaded
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_gets_a_pool_of_its_own():
    # the parent's pool exists and its worker is idle: a child inheriting it would hand work to
    # a thread it does not have, and wait for ever
    assert len(set(parallel.run(lambda _: threading.get_ident(), [0, 1]))) == 2
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only when both kinds of work ran on threads of its own
        code = 3
        try:
            signal.alarm(30)  # a hang ends as a kill by SIGALRM, not as a stuck test run
            ran = parallel.run(lambda _: threading.get_ident(), [0, 1])
            with parallel.Background(threads=2) as bg:
                bg.submit(threading.get_ident)
                (helper,) = bg.results()
            code = 0 if len(set(ran)) == 2 and helper != threading.get_ident() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
