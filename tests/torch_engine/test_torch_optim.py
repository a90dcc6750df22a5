"""The torch engine's optimizers (nnc.engines.torch.optim) against nnc.training.optim's, which
tests/train/test_train_optim.py checks against hand computations, Keras 3 and PyTorch: the same
gradients give the same weights step after step, the same checkpoint state (names, layouts,
values), and a run checkpointed by one engine resumes in the other."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nnc.engines.torch import optim as t_optim  # noqa: E402
from nnc.lang.model import LRSchedule, OptimizerConfig  # noqa: E402
from nnc.training import optim as np_optim  # noqa: E402

SHAPES = {"dense_1.kernel": (4, 3), "dense_1.bias": (3,)}

CASES = [
    ("sgd", dict(lr=0.1), None),
    ("sgd", dict(lr=0.05, momentum=0.9, weight_decay=0.01), None),  # the lecture's rule
    ("sgd", dict(lr=0.05, momentum=0.8, nesterov=True), None),
    ("rmsprop", dict(lr=0.01), None),
    ("rmsprop", dict(lr=0.01, rho=0.8, momentum=0.5, weight_decay=0.02), None),
    ("adam", dict(lr=0.01), None),
    ("adam", dict(lr=0.02, beta_1=0.8, beta_2=0.99, weight_decay=0.05, clipnorm=0.5), None),
    ("adamw", dict(lr=0.01, weight_decay=0.004, global_clipnorm=0.7), None),
    ("nadam", dict(lr=0.01, clipvalue=0.3), None),
    ("adagrad", dict(lr=0.1), LRSchedule("exponential", decay_steps=2, decay_rate=0.5)),
    ("sgd", dict(lr=0.1, momentum=0.5), LRSchedule("cosine", decay_steps=3, alpha=0.1)),
    # amsgrad with a small beta_2, so that v shrinks on these gradients and v_hat (its maximum) differs
    ("adam", dict(lr=0.01, beta_2=0.5, amsgrad=True), None),
    ("adamw", dict(lr=0.02, beta_2=0.6, weight_decay=0.01, clipnorm=1.0, amsgrad=True), None),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}{'-' + s.kind if s else ''}" for n, kw, s in CASES]


def _grads(rng, dtype, steps=4):
    return [{k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()} for _ in range(steps)]


def _np_run(opt, w, grads):
    for g in grads:
        opt.step(w, g)
    return w


def _t_run(opt, w, grads):
    for g in grads:
        opt.step(w, {k: torch.from_numpy(v) for k, v in g.items()})
    return w


def test_every_numpy_optimizer_has_a_torch_twin():
    assert set(t_optim.OPTIMIZERS) == set(np_optim.OPTIMIZERS)


@pytest.mark.parametrize("name,kw,schedule", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_steps_and_state_match_nnc_optim(name, kw, schedule, dtype):
    cfg = OptimizerConfig(name, **kw)
    rng = np.random.default_rng(3)
    w0 = {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
    grads = _grads(rng, dtype)
    a = np_optim.make_optimizer(cfg, schedule)
    b = t_optim.make_optimizer(cfg, schedule)
    wa = {k: v.copy() for k, v in w0.items()}
    wb = {k: torch.from_numpy(v.copy()) for k, v in w0.items()}
    tol = dict(rtol=1e-13, atol=1e-15) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-7)
    for g in grads:
        _np_run(a, wa, [g])
        _t_run(b, wb, [g])
        for k in SHAPES:
            assert wb[k].dtype == torch.from_numpy(w0[k]).dtype
            np.testing.assert_allclose(wb[k].numpy(), wa[k], **tol, err_msg=k)
    sa, sb = a.state_arrays(), b.state_arrays()
    assert sorted(sa) == sorted(sb)
    if kw.get("amsgrad"):  # the running maximum is used: it is above v somewhere
        assert sorted(sa) == sorted(f"{s}/{k}" for s in ("m", "v", "v_hat") for k in SHAPES)
        assert any((sb[f"v_hat/{k}"] > sb[f"v/{k}"] * 1.01).any() for k in SHAPES)
    for k in sa:
        assert sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype, k
        np.testing.assert_allclose(sb[k], sa[k], **tol, err_msg=k)
    assert a.iterations == b.iterations == len(grads)


@pytest.mark.parametrize("name,kw,schedule", [CASES[1], CASES[4], CASES[6], CASES[8], CASES[9], CASES[11]],
                         ids=[IDS[1], IDS[4], IDS[6], IDS[8], IDS[9], IDS[11]])
def test_a_checkpoint_resumes_in_the_other_engine(name, kw, schedule):
    cfg = OptimizerConfig(name, **kw)
    rng = np.random.default_rng(5)
    w0 = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    grads = _grads(rng, np.float64, steps=6)
    whole = _np_run(np_optim.make_optimizer(cfg, schedule), {k: v.copy() for k, v in w0.items()}, grads)

    # NumPy for 3 steps, then torch from NumPy's checkpoint
    first = np_optim.make_optimizer(cfg, schedule)
    w = _np_run(first, {k: v.copy() for k, v in w0.items()}, grads[:3])
    second = t_optim.make_optimizer(cfg, schedule)
    second.load_state(first.state_arrays(), first.iterations)
    tw = _t_run(second, {k: torch.from_numpy(v.copy()) for k, v in w.items()}, grads[3:])
    for k in SHAPES:
        np.testing.assert_allclose(tw[k].numpy(), whole[k], rtol=1e-13, atol=1e-15)

    # torch for 3 steps, then NumPy from torch's checkpoint
    first = t_optim.make_optimizer(cfg, schedule)
    tw = _t_run(first, {k: torch.from_numpy(v.copy()) for k, v in w0.items()}, grads[:3])
    second = np_optim.make_optimizer(cfg, schedule)
    second.load_state(first.state_arrays(), first.iterations)
    w = _np_run(second, {k: v.numpy().copy() for k, v in tw.items()}, grads[3:])
    for k in SHAPES:
        np.testing.assert_allclose(w[k], whole[k], rtol=1e-13, atol=1e-15)


@pytest.mark.reference
@pytest.mark.parametrize("name,kw", [("adam", dict(lr=0.01, amsgrad=True)),
                                     ("adamw", dict(lr=0.02, beta_2=0.9, weight_decay=0.05, amsgrad=True))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_amsgrad_matches_keras(name, kw, dtype):
    """The torch engine's amsgrad against Keras 3's Adam/AdamW(amsgrad=True) directly, step by
    step: weights, and v_hat against Keras's _velocity_hats, on gradients whose scale falls (so
    that v shrinks and v_hat, its running maximum, stays above it)."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(8)
    w0 = {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
    grads = [{k: rng.normal(scale=sc, size=s).astype(dtype) for k, s in SHAPES.items()}
             for sc in (3.0, 2.0, 0.3, 0.05, 1.0, 0.02, 0.01)]
    opt = t_optim.make_optimizer(OptimizerConfig(name, **kw))
    theirs = {("learning_rate" if k == "lr" else k): v for k, v in kw.items()}
    old = keras.config.floatx()
    keras.config.set_floatx("float64" if dtype == np.float64 else "float32")
    try:
        kopt = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW}[name](**theirs)
        kvars = {k: keras.Variable(v.copy(), dtype=dtype) for k, v in w0.items()}
        w = {k: torch.from_numpy(v.copy()) for k, v in w0.items()}
        tol = dict(rtol=1e-9, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
        for step, g in enumerate(grads):
            opt.step(w, {k: torch.from_numpy(v) for k, v in g.items()})
            kopt.apply_gradients([(keras.ops.convert_to_tensor(g[k]), kvars[k]) for k in SHAPES])
            for k in SHAPES:
                i = kopt._get_variable_index(kvars[k])
                np.testing.assert_allclose(w[k].numpy(), np.asarray(kvars[k].numpy()), **tol,
                                           err_msg=f"{name} step {step + 1} {k}")
                np.testing.assert_allclose(opt.state["v_hat"][k].numpy(), np.asarray(kopt._velocity_hats[i].numpy()),
                                           **tol, err_msg=f"{name} step {step + 1} v_hat/{k}")
    finally:
        keras.config.set_floatx(old)
    assert any((opt.state["v_hat"][k] > opt.state["v"][k] * (1 + 1e-3)).any() for k in SHAPES)
