"""AdamW, Nadam, Adagrad, weight decay on every optimizer, gradient clipping and step schedules
inside the optimizer: step by step against Keras 3's own optimizers (same weights, same
gradients -> same weights and slots), in float64 and float32."""


import numpy as np
import pytest

from nnc.lang.model import LRSchedule, OptimizerConfig
from nnc.training.optim import OPTIMIZERS, make_optimizer

RNG = np.random.default_rng(11)
# two weights of different shapes, so that per-weight and global clipping differ
W0 = {"a": RNG.normal(size=(3, 4)), "b": RNG.normal(size=(5,))}
GRADS = [{"a": RNG.normal(scale=s, size=(3, 4)), "b": RNG.normal(scale=s, size=(5,))} for s in (0.5, 3.0, 0.1, 2.0, 1.0, 4.0)]
# Keras's names of each nnc slot: nnc slot -> the Keras optimizer's list of variables
KERAS_SLOTS = {"adam": {"m": "_momentums", "v": "_velocities", "v_hat": "_velocity_hats"},
               "adamw": {"m": "_momentums", "v": "_velocities", "v_hat": "_velocity_hats"},
               "nadam": {"momentum": "_momentums", "velocity": "_velocities"},
               "adagrad": {"accumulator": "_accumulators"}, "sgd": {"momentum": "momentums"},
               "rmsprop": {"velocity": "_velocities", "momentum": "_momentums"}}


def _keras_optimizer(keras, name, kw, schedule=None):
    cls = {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
           "adamw": keras.optimizers.AdamW, "nadam": keras.optimizers.Nadam, "adagrad": keras.optimizers.Adagrad}[name]
    kw = dict(kw)
    lr = kw.pop("lr", None)
    if schedule is not None:
        kw["learning_rate"] = schedule
    elif lr is not None:
        kw["learning_rate"] = lr
    return cls(**kw)


def _compare(keras, name, ours, theirs, dtype, rtol, schedule=None, keras_schedule=None, grads=GRADS, atol=None):
    opt = make_optimizer(OptimizerConfig(name, **ours), schedule)
    kopt = _keras_optimizer(keras, name, theirs, keras_schedule)
    w = {k: v.astype(dtype) for k, v in W0.items()}
    kvars = [keras.Variable(w["a"].copy(), dtype=dtype), keras.Variable(w["b"].copy(), dtype=dtype)]
    atol = rtol * 1e-2 if atol is None else atol
    for step, g in enumerate(grads):
        g = {k: v.astype(dtype) for k, v in g.items()}
        opt.step(w, g)
        kopt.apply_gradients([(keras.ops.convert_to_tensor(g["a"]), kvars[0]),
                              (keras.ops.convert_to_tensor(g["b"]), kvars[1])])
        for key, var in zip(("a", "b"), kvars):
            np.testing.assert_allclose(w[key], np.asarray(var.numpy()), rtol=rtol, atol=atol,
                                       err_msg=f"{name} step {step + 1} weight {key}")
        for slot, attr in KERAS_SLOTS[name].items():
            if slot not in opt.state:
                continue
            for key, i in (("a", 0), ("b", 1)):
                theirs_slot = np.asarray(getattr(kopt, attr)[kopt._get_variable_index(kvars[i])].numpy())
                np.testing.assert_allclose(opt.state[slot][key], theirs_slot, rtol=rtol, atol=atol,
                                           err_msg=f"{name} step {step + 1} slot {slot}/{key}")
    if name == "nadam":
        np.testing.assert_allclose(opt.scalars["u_product"], float(kopt._u_product.numpy()), rtol=rtol)
    assert opt.iterations == len(grads) == int(kopt.iterations.numpy())
    return opt


CASES = [
    ("adamw", dict(lr=0.01), dict(learning_rate=0.01)),  # Keras's default weight_decay 0.004 on both sides
    ("adamw", dict(lr=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-6, weight_decay=0.1),
     dict(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-6, weight_decay=0.1)),
    ("nadam", dict(lr=0.01), dict(learning_rate=0.01)),
    ("nadam", dict(lr=0.005, beta_1=0.85, beta_2=0.95, epsilon=1e-5, weight_decay=0.05),
     dict(learning_rate=0.005, beta_1=0.85, beta_2=0.95, epsilon=1e-5, weight_decay=0.05)),
    ("adagrad", dict(lr=0.05), dict(learning_rate=0.05)),
    ("adagrad", dict(lr=0.1, initial_accumulator_value=0.5, epsilon=1e-4, weight_decay=0.02),
     dict(learning_rate=0.1, initial_accumulator_value=0.5, epsilon=1e-4, weight_decay=0.02)),
    # weight decay on the older optimizers too (Keras's base-optimizer weight_decay)
    ("rmsprop", dict(lr=0.01, weight_decay=0.03), dict(learning_rate=0.01, weight_decay=0.03)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
     dict(learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
]


@pytest.mark.reference
@pytest.mark.parametrize("name,ours,theirs", CASES)
def test_optimizers_match_keras_float64(keras64, name, ours, theirs):
    if name == "adamw" and "weight_decay" not in ours:
        # the default weight decay comes from the checker's table, as the train block gives it
        from nnc.lang.checker import OPTIMIZERS as TABLE

        ours = {"weight_decay": next(o.default for o in TABLE["adamw"] if o.name == "weight_decay"), **ours}
        assert ours["weight_decay"] == keras64.optimizers.AdamW().weight_decay == 0.004
    _compare(keras64, name, ours, theirs, np.float64, 1e-6)


@pytest.mark.reference
@pytest.mark.parametrize("name", ["adamw", "nadam", "adagrad"])
def test_optimizers_match_keras_float32(keras, name):
    ours = dict(lr=0.01, weight_decay=0.004 if name == "adamw" else 0.0)
    _compare(keras, name, ours, dict(learning_rate=0.01), np.float32, 1e-5)


CLIPS = [
    ("sgd", dict(lr=0.1, momentum=0.5, weight_decay=0.1, clipnorm=1.0)),
    ("adam", dict(lr=0.01, weight_decay=0.05, clipnorm=0.7)),
    ("sgd", dict(lr=0.1, weight_decay=0.1, global_clipnorm=1.5)),
    ("nadam", dict(lr=0.01, global_clipnorm=2.0)),
    ("sgd", dict(lr=0.1, weight_decay=0.2, clipvalue=0.3)),
    ("adagrad", dict(lr=0.1, clipvalue=1.0)),
    ("rmsprop", dict(lr=0.01, momentum=0.3, clipnorm=2.0)),
]


@pytest.mark.reference
@pytest.mark.parametrize("name,kw", CLIPS)
def test_clipping_matches_keras(keras64, name, kw):
    theirs = {("learning_rate" if k == "lr" else k): v for k, v in kw.items()}
    _compare(keras64, name, kw, theirs, np.float64, 1e-6)


def test_clipping_by_hand():
    g = {"a": np.array([3.0, 4.0]), "b": np.array([0.3, 0.4])}  # norms 5 and 0.5; together sqrt(25.25)
    clipped = make_optimizer(OptimizerConfig("sgd", 0.1, clipnorm=1.0)).clip(g)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.8])
    np.testing.assert_array_equal(clipped["b"], g["b"])  # under the norm: untouched
    clipped = make_optimizer(OptimizerConfig("sgd", 0.1, global_clipnorm=1.0)).clip(g)
    scale = 1.0 / np.sqrt(25.25)
    np.testing.assert_allclose(clipped["a"], g["a"] * scale)
    np.testing.assert_allclose(clipped["b"], g["b"] * scale)
    clipped = make_optimizer(OptimizerConfig("sgd", 0.1, clipvalue=0.35)).clip(g)
    np.testing.assert_array_equal(clipped["a"], [0.35, 0.35])
    np.testing.assert_array_equal(clipped["b"], [0.3, 0.35])
    nan = make_optimizer(OptimizerConfig("sgd", 0.1, global_clipnorm=1.0)).clip({"a": np.array([np.inf, 1.0])})
    assert np.isnan(nan["a"]).all()  # Keras: a non-finite global norm makes every gradient NaN


SCHEDULED = [
    ("sgd", dict(lr=0.1), LRSchedule("exponential", decay_steps=2, decay_rate=0.5)),
    ("adam", dict(lr=0.01, weight_decay=0.1), LRSchedule("exponential", decay_steps=3, decay_rate=0.7, staircase=True)),
    ("adamw", dict(lr=0.01, weight_decay=0.004), LRSchedule("cosine", decay_steps=4, alpha=0.1)),
    ("nadam", dict(lr=0.0), LRSchedule("cosine", decay_steps=3, warmup_target=0.02, warmup_steps=2)),
    ("sgd", dict(lr=0.3, momentum=0.9, weight_decay=0.1), LRSchedule("piecewise", boundaries=(1, 3), values=(0.3, 0.1, 0.02))),
]


def _keras_schedule(keras, s: LRSchedule, lr0: float):
    sch = keras.optimizers.schedules
    if s.kind == "exponential":
        return sch.ExponentialDecay(lr0, s.decay_steps, s.decay_rate, staircase=s.staircase)
    if s.kind == "cosine":
        return sch.CosineDecay(lr0, s.decay_steps, alpha=s.alpha, warmup_target=s.warmup_target,
                               warmup_steps=s.warmup_steps)
    return sch.PiecewiseConstantDecay(list(s.boundaries), list(s.values))


@pytest.mark.reference
@pytest.mark.parametrize("name,kw,schedule", SCHEDULED)
def test_schedules_inside_the_optimizer_match_keras(keras64, name, kw, schedule):
    """The step's lr (and weight decay's) is the schedule at the iterations before the step."""
    theirs = {k: v for k, v in kw.items() if k != "lr"}
    _compare(keras64, name, kw, theirs, np.float64, 1e-6, schedule, _keras_schedule(keras64, schedule, kw["lr"]))


def test_nadam_state_round_trip_continues_identically():
    cfg = OptimizerConfig("nadam", lr=0.01, clipnorm=1.0)
    sched = LRSchedule("cosine", decay_steps=5)
    full = make_optimizer(cfg, sched)
    w_full = {k: v.copy() for k, v in W0.items()}
    for g in GRADS:
        full.step(w_full, g)
    first = make_optimizer(cfg, sched)
    w = {k: v.copy() for k, v in W0.items()}
    for g in GRADS[:3]:
        first.step(w, g)
    arrays = first.state_arrays()
    assert "scalar/u_product" in arrays and float(arrays["scalar/u_product"]) != 1.0
    again = make_optimizer(cfg, sched)
    again.load_state({k: np.array(v) for k, v in arrays.items()}, first.iterations)
    for g in GRADS[3:]:
        again.step(w, g)
    for k in w:
        assert np.array_equal(w[k], w_full[k]), k


# amsgrad: gradients whose scale falls after large ones, so that v shrinks (even with beta_2=0.999)
# and its running maximum v_hat stays above it
_RNG_AMS = np.random.default_rng(12)
AMS_GRADS = [{"a": _RNG_AMS.normal(scale=s, size=(3, 4)), "b": _RNG_AMS.normal(scale=s, size=(5,))}
             for s in (3.0, 2.0, 0.3, 0.05, 1.0, 0.02, 0.01)]
AMSGRAD = [
    ("adam", dict(lr=0.01, amsgrad=True)),
    ("adam", dict(lr=0.02, beta_1=0.8, beta_2=0.9, epsilon=1e-6, weight_decay=0.05, amsgrad=True)),
    ("adamw", dict(lr=0.01, weight_decay=0.004, amsgrad=True)),
    ("adamw", dict(lr=0.02, beta_2=0.95, weight_decay=0.1, clipnorm=2.0, amsgrad=True)),
]


def _run(cfg, grads, dtype=np.float64):
    opt = make_optimizer(cfg)
    w = {k: v.astype(dtype) for k, v in W0.items()}
    for g in grads:
        opt.step(w, {k: v.astype(dtype) for k, v in g.items()})
    return opt, w


def _assert_v_hat_above_v(opt):
    """Without this the test could not tell amsgrad from plain adam: v_hat = v while v only grows."""
    assert set(opt.state) == {"m", "v", "v_hat"}
    for k in W0:
        assert (opt.state["v_hat"][k] >= opt.state["v"][k]).all(), k
    assert any((opt.state["v_hat"][k] > (1 + 1e-3) * opt.state["v"][k]).any() for k in W0)


@pytest.mark.reference
@pytest.mark.parametrize("name,ours", AMSGRAD)
# float32: weights near 1 that reach ~0.02 after 7 steps carry float32 rounding of the steps (~1e-7
# each; plain adam differs from Keras's as much on these gradients)
@pytest.mark.parametrize("dtype,rtol,atol", [(np.float64, 1e-6, 1e-8), (np.float32, 1e-5, 1e-6)],
                         ids=["float64", "float32"])
def test_amsgrad_matches_keras(keras, name, ours, dtype, rtol, atol):
    """Keras's Adam/AdamW(amsgrad=True), step by step: weights and the three slots (v_hat is
    Keras's _velocity_hats); and the option changes the result."""
    theirs = {("learning_rate" if k == "lr" else k): v for k, v in ours.items()}
    old = keras.config.floatx()
    keras.config.set_floatx("float64" if dtype == np.float64 else "float32")
    try:
        opt = _compare(keras, name, ours, theirs, dtype, rtol, grads=AMS_GRADS, atol=atol)
    finally:
        keras.config.set_floatx(old)
    _assert_v_hat_above_v(opt)
    _, w_ams = _run(OptimizerConfig(name, **ours), AMS_GRADS, dtype)
    _, w_plain = _run(OptimizerConfig(name, **{**ours, "amsgrad": False}), AMS_GRADS, dtype)
    assert not np.allclose(w_ams["a"], w_plain["a"], rtol=10 * rtol, atol=0)


def test_amsgrad_state_round_trip_continues_identically():
    cfg = OptimizerConfig("adam", lr=0.01, beta_2=0.9, amsgrad=True)
    full, w_full = _run(cfg, AMS_GRADS)
    first, w = _run(cfg, AMS_GRADS[:4])
    arrays = first.state_arrays()
    assert sorted(arrays) == sorted(f"{s}/{k}" for s in ("m", "v", "v_hat") for k in W0)
    _assert_v_hat_above_v(first)  # the cut falls where v_hat carries something v does not
    again = make_optimizer(cfg)
    again.load_state({k: np.array(v) for k, v in arrays.items()}, first.iterations)
    w_again = {k: v.copy() for k, v in w.items()}
    for g in AMS_GRADS[4:]:
        again.step(w_again, g)
    for k in w:
        assert np.array_equal(w_again[k], w_full[k]), k
    # the slot matters: a checkpoint without it (v_hat from zeros again) continues elsewhere
    lost = make_optimizer(cfg)
    lost.load_state({k: np.array(v) for k, v in arrays.items() if not k.startswith("v_hat/")}, first.iterations)
    for g in AMS_GRADS[4:]:
        lost.step(w, g)
    assert not np.array_equal(w["a"], w_full["a"])


AMS_SPEC = """model ams
input x: float32[6]
dense 8 activation=tanh
dense 3 activation=softmax

train {
  loss sparse_categorical_crossentropy
  optimizer OPT
  epochs 4
  batch_size 8
  seed 1
}
"""


def test_amsgrad_from_the_spec_trains_and_resumes_exactly(tmp_path):
    """`optimizer adam amsgrad=true` reaches the run (its header, its checkpoint's v_hat slot), and a
    run resumed from its state.npz ends bit-identical to the straight one."""
    import nnc
    from nnc.training.loop import describe, read_state

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    model = nnc.loads(AMS_SPEC.replace("OPT", "adam lr=0.05 beta_2=0.9 amsgrad=true"))
    assert model.train.optimizer.amsgrad is True
    assert "optimizer adam lr=0.05 amsgrad=true," in describe(model.train)
    straight = nnc.fit(model, x, y, verbose=0)
    nnc.fit(model, x, y, epochs=2, out=tmp_path / "run", verbose=0)
    arrays, meta = read_state(str(tmp_path / "run"))
    assert meta["config"]["optimizer"]["amsgrad"] is True
    v, v_hat = arrays["opt/v/dense_1.kernel"], arrays["opt/v_hat/dense_1.kernel"]
    assert (v_hat >= v).all() and (v_hat > v).any()
    resumed = nnc.fit(model, x, y, epochs=4, out=tmp_path / "run", resume=True, verbose=0)
    assert resumed.history == straight.history
    assert all(np.array_equal(resumed.weights[k], straight.weights[k]) for k in straight.weights)
    plain = nnc.fit(nnc.loads(AMS_SPEC.replace("OPT", "adam lr=0.05 beta_2=0.9")), x, y, verbose=0)
    assert not np.array_equal(plain.weights["dense_1.kernel"], straight.weights["dense_1.kernel"])
    assert "amsgrad" not in describe(nnc.loads(AMS_SPEC.replace("OPT", "adam lr=0.05")).train)


def test_the_checker_takes_amsgrad_on_adam_and_adamw_only():
    from nnc.lang.checker import check_source

    for opt in ("adam amsgrad=true", "adamw lr=0.01 amsgrad=true", "adam amsgrad=false"):
        r = check_source(AMS_SPEC.replace("OPT", opt))
        assert r.ok and not r.diagnostics, (opt, [d.message for d in r.diagnostics])
        assert r.model.train.optimizer.amsgrad is opt.endswith("true"), opt
    for name in ("sgd", "rmsprop", "nadam", "adagrad"):
        r = check_source(AMS_SPEC.replace("OPT", f"{name} amsgrad=true"))
        assert not r.ok
        [d] = r.diagnostics
        assert (d.code, d.message) == ("unknown-option", f"{name} has no option 'amsgrad'"), name
        line = AMS_SPEC.replace("OPT", f"{name} amsgrad=true").splitlines()[d.span.line - 1]
        assert line[d.span.col - 1:].startswith("amsgrad=true"), (name, d.span)
    [d] = check_source(AMS_SPEC.replace("OPT", "adam amsgrad=1")).diagnostics
    assert d.code == "bad-value" and "expected true or false" in d.message


def test_every_optimizer_of_the_table_is_implemented():
    from nnc.lang.checker import OPTIMIZERS as TABLE
    from nnc.lang.keras_names import KERAS_OPTIMIZERS_NOT_IN_NNC
    from nnc.training.flags import OPTIMIZER_NAMES

    assert set(TABLE) == set(OPTIMIZERS) == set(OPTIMIZER_NAMES)
    assert not set(TABLE) & set(KERAS_OPTIMIZERS_NOT_IN_NNC)
    fields = set(OptimizerConfig.__dataclass_fields__)
    for name, opts in TABLE.items():
        assert {o.name for o in opts} <= fields, name
        assert {"clipnorm", "clipvalue", "global_clipnorm", "weight_decay"} <= {o.name for o in opts}, name


@pytest.mark.reference
def test_table_defaults_are_keras_defaults(keras):
    """Each option's default in the checker's table is the Keras constructor's default."""
    import inspect

    from nnc.lang.checker import OPTIMIZERS as TABLE

    classes = {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
               "adamw": keras.optimizers.AdamW, "nadam": keras.optimizers.Nadam, "adagrad": keras.optimizers.Adagrad}
    for name, opts in TABLE.items():
        params = inspect.signature(classes[name].__init__).parameters
        for o in opts:
            keras_name = "learning_rate" if o.name == "lr" else o.name
            default = params[keras_name].default
            if o.name == "weight_decay" and default is None:
                default = 0.0  # None (off) in Keras, 0 in nnc
            assert o.default == default, (name, o.name, o.default, default)
