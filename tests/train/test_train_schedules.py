"""Learning-rate schedules (`lr_schedule`): each schedule's values against
keras.optimizers.schedules at many steps, ReduceLROnPlateau against Keras's callback on fixed
sequences, its state across --resume, the checker's diagnostics, and the CLI's flags."""

import dataclasses
import json

import numpy as np
import pytest

from nnc.cli import main
from nnc.lang.checker import check_source
from nnc.lang.errors import UserError
from nnc.lang.model import LRSchedule, OptimizerConfig, TrainConfig
from nnc.training.data import Dataset
from nnc.training.schedules import Plateau, step_learning_rate
from nnc.training.loop import (
    Trainer,
    config_from_json,
    config_to_json,
    describe,
    override,
    read_state,
    validate_config,
)


STEPS = list(range(0, 40)) + [50, 99, 100, 101, 150, 1000, 12345]
SCHEDULES = [
    (LRSchedule("cosine", decay_steps=30), 0.1),
    (LRSchedule("cosine", decay_steps=7, alpha=0.25), 0.02),
    (LRSchedule("cosine", decay_steps=20, alpha=0.1, warmup_target=0.05, warmup_steps=10), 0.0),
    (LRSchedule("cosine", decay_steps=5, warmup_target=0.001, warmup_steps=3), 0.01),  # a warmup down
    (LRSchedule("exponential", decay_steps=10, decay_rate=0.5), 0.1),
    (LRSchedule("exponential", decay_steps=4, decay_rate=0.9, staircase=True), 0.3),
    (LRSchedule("exponential", decay_steps=1, decay_rate=1.01), 0.001),
    (LRSchedule("piecewise", boundaries=(10, 25, 100), values=(0.1, 0.05, 0.01, 0.001)), 0.1),
    (LRSchedule("piecewise", boundaries=(0,), values=(1.0, 0.5)), 1.0),
]


def _keras_schedule(keras, s: LRSchedule, lr0: float):
    sch = keras.optimizers.schedules
    if s.kind == "cosine":
        return sch.CosineDecay(lr0, s.decay_steps, alpha=s.alpha, warmup_target=s.warmup_target,
                               warmup_steps=s.warmup_steps)
    if s.kind == "exponential":
        return sch.ExponentialDecay(lr0, s.decay_steps, s.decay_rate, staircase=s.staircase)
    return sch.PiecewiseConstantDecay(list(s.boundaries), list(s.values))


@pytest.mark.reference
@pytest.mark.parametrize("schedule,lr0", SCHEDULES)
def test_schedule_values_match_keras(keras64, schedule, lr0):
    ks = _keras_schedule(keras64, schedule, lr0)
    ours = [step_learning_rate(schedule, lr0, step) for step in STEPS]
    theirs = [float(ks(np.int64(step))) for step in STEPS]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-15)


def test_schedule_shapes_by_hand():
    cos = LRSchedule("cosine", decay_steps=10, alpha=0.1)
    assert step_learning_rate(cos, 1.0, 0) == 1.0 and step_learning_rate(cos, 1.0, 10) == pytest.approx(0.1)
    assert step_learning_rate(cos, 1.0, 5) == pytest.approx(0.55) and step_learning_rate(cos, 1.0, 99) == pytest.approx(0.1)
    warm = LRSchedule("cosine", decay_steps=10, warmup_target=1.0, warmup_steps=4)
    assert [step_learning_rate(warm, 0.0, s) for s in range(5)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    pw = LRSchedule("piecewise", boundaries=(2, 4), values=(3.0, 2.0, 1.0))
    assert [step_learning_rate(pw, 3.0, s) for s in range(6)] == [3.0, 3.0, 3.0, 2.0, 2.0, 1.0]
    assert step_learning_rate(LRSchedule("reduce_on_plateau"), 0.1, 500) == 0.1  # not a step schedule
    assert step_learning_rate(None, 0.1, 500) == 0.1


# --- ReduceLROnPlateau ----------------------------------------------------------------------------

MONITORED = [1.0, 0.9, 0.95, 0.91, 0.9, 0.89999, 0.85, 0.86, 0.87, 0.8, 0.8, 0.8, 0.8, 0.81, 0.79, 0.6, 0.7, 0.7,
             0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
PLATEAUS = [
    LRSchedule("reduce_on_plateau", monitor="val_loss", factor=0.5, patience=2, min_delta=0.01),
    LRSchedule("reduce_on_plateau", monitor="loss", factor=0.1, patience=1, min_delta=0.0, cooldown=2, min_lr=1e-4),
    LRSchedule("reduce_on_plateau", monitor="loss", factor=0.3, patience=0, min_delta=1e-4, cooldown=1, min_lr=0.004),
    LRSchedule("reduce_on_plateau", monitor="val_accuracy", factor=0.2, patience=3, min_delta=0.02, cooldown=1),
]


class _Model:  # what ReduceLROnPlateau reads of a model: its optimizer
    def __init__(self, optimizer):
        self.optimizer = optimizer


@pytest.mark.reference
@pytest.mark.parametrize("cfg", PLATEAUS)
def test_reduce_on_plateau_matches_keras(keras, cfg):
    values = [1.0 - v for v in MONITORED] if cfg.monitor.endswith("accuracy") else MONITORED
    lr = 0.1
    mode = "max" if cfg.monitor.endswith("accuracy") else "auto"  # Keras's auto finds accuracy's direction in model.metrics
    cb = keras.callbacks.ReduceLROnPlateau(monitor=cfg.monitor, factor=cfg.factor, patience=cfg.patience, mode=mode,
                                           min_delta=cfg.min_delta, cooldown=cfg.cooldown, min_lr=cfg.min_lr)
    cb.set_model(_Model(keras.optimizers.SGD(learning_rate=lr)))
    cb.on_train_begin()
    ours = Plateau()
    reductions = 0
    for epoch, v in enumerate(values):
        logs = {cfg.monitor: v}
        cb.on_epoch_end(epoch, logs)
        assert float(np.float32(lr)) == logs["learning_rate"]  # the rate the epoch ran with, as Keras logs it
        new = ours.on_epoch_end(cfg, v, lr)
        reductions += new != lr
        lr = new
        assert float(np.float32(lr)) == float(cb.model.optimizer.learning_rate.numpy()), epoch
        assert (ours.wait, ours.cooldown_counter, ours.best) == (cb.wait, cb.cooldown_counter, cb.best), epoch
    assert reductions >= 2  # the sequence exercises the rule


# --- in the training loop ---------------------------------------------------------------------------

SPEC = """model small
input x: float32[6]
dense 8 activation=tanh
dense 3 activation=softmax
"""


class Stop(Exception):
    pass


def _data(n=60):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return check_source(SPEC).model, Dataset("synthetic", x, y)


PLATEAU_CFG = TrainConfig(loss="sparse_categorical_crossentropy", optimizer=OptimizerConfig("sgd", 0.5, momentum=0.9),
                          metrics=("accuracy",), epochs=7, batch_size=16, validation_split=0.25, seed=2,
                          lr_schedule=LRSchedule("reduce_on_plateau", monitor="val_loss", factor=0.5, patience=0,
                                                 min_delta=0.05, cooldown=1))
COSINE_CFG = TrainConfig(loss="sparse_categorical_crossentropy",
                         optimizer=OptimizerConfig("nadam", 0.0, clipnorm=0.5, weight_decay=0.01), epochs=4,
                         batch_size=16, seed=1,
                         lr_schedule=LRSchedule("cosine", decay_steps=6, warmup_target=0.05, warmup_steps=3))


def _interrupted_then_resumed(tmp_path, cfg, cut_epoch):
    model, data = _data()
    full = Trainer(model, cfg, data, str(tmp_path / "full"), spec_source=SPEC)
    full.fit()

    def interrupt(epoch, step):
        if epoch == cut_epoch and step == 1:
            raise Stop()

    out = str(tmp_path / "cut")
    t = Trainer(model, cfg, data, out, spec_source=SPEC, on_step=interrupt)
    with pytest.raises(Stop):
        t.fit()
    arrays, meta = read_state(out)
    resumed = Trainer(model, cfg, data, out, spec_source=SPEC)
    resumed.restore(arrays, meta)
    resumed.fit()
    for k in full.net.weights:
        assert np.array_equal(full.net.weights[k], resumed.net.weights[k]), k
    history = json.loads((tmp_path / "full" / "history.json").read_text())
    assert json.loads((tmp_path / "cut" / "history.json").read_text()) == history
    return full, meta, history


def test_reduce_on_plateau_state_survives_resume(tmp_path):
    full, meta, history = _interrupted_then_resumed(tmp_path, PLATEAU_CFG, cut_epoch=4)
    lrs = history["learning_rate"]
    assert len(lrs) == 7 and lrs[0] == float(np.float32(0.5)) and lrs[-1] < lrs[0]  # it reduced during the run
    # the checkpoint the resumed run started from held a reduced rate and the callback's state
    assert meta["epoch"] == 4 and meta["lr"] < 0.5 and float(np.float32(meta["lr"])) == lrs[4]
    # Keras's rule replayed on the history: the logged rates follow from val_loss alone
    p, lr = Plateau(), 0.5
    for epoch, v in enumerate(history["val_loss"]):
        assert lrs[epoch] == float(np.float32(lr))
        lr = p.on_epoch_end(PLATEAU_CFG.lr_schedule, v, lr)
        if epoch == 3:  # the state checkpointed after epoch 4
            assert meta["plateau"] == dataclasses.asdict(p) and meta["lr"] == lr
    assert full.opt.lr == lr
    assert any(meta_state != 0 for meta_state in (meta["plateau"]["wait"], meta["plateau"]["cooldown_counter"]))


def test_state_of_the_reduction_is_needed_on_resume(tmp_path):
    """Without the checkpointed state the resumed run would differ: the test above can fail."""
    model, data = _data()
    cfg = PLATEAU_CFG
    out = str(tmp_path / "cut")

    def interrupt(epoch, step):
        if epoch == 4 and step == 1:
            raise Stop()

    with pytest.raises(Stop):
        Trainer(model, cfg, data, out, spec_source=SPEC, on_step=interrupt).fit()
    arrays, meta = read_state(out)
    forgetful = dict(meta, lr=None, plateau={})
    resumed = Trainer(model, cfg, data, out, spec_source=SPEC)
    resumed.restore(arrays, forgetful)
    assert resumed.opt.lr == 0.5 != meta["lr"]


def test_step_schedule_and_nadam_resume_exactly(tmp_path):
    full, meta, history = _interrupted_then_resumed(tmp_path, COSINE_CFG, cut_epoch=2)
    assert "learning_rate" not in history  # Keras 3 logs no rate for a schedule inside the optimizer
    steps = 4  # ceil(60 / 16) a epoch
    assert full.opt.iterations == 4 * steps and full.opt.learning_rate == pytest.approx(0.0)  # decayed to alpha=0
    assert meta["iterations"] == 2 * steps


def test_config_round_trips_and_is_described():
    cfg = dataclasses.replace(PLATEAU_CFG, lr_schedule=LRSchedule("piecewise", boundaries=(10, 20), values=(0.5, 0.1, 0.01)))
    again = config_from_json(json.loads(json.dumps(config_to_json(cfg))))
    assert again == cfg
    assert "lr_schedule piecewise boundaries=[10, 20] values=[0.5, 0.1, 0.01]" in describe(cfg)
    assert "clipnorm=0.5" in describe(COSINE_CFG) and "warmup_target=0.05 warmup_steps=3" in describe(COSINE_CFG)


def test_validate_config_refuses_what_flags_can_break():
    with pytest.raises(UserError, match="no validation data"):
        validate_config(dataclasses.replace(PLATEAU_CFG, validation_split=0.0))
    with pytest.raises(UserError, match="not among the metrics"):
        validate_config(dataclasses.replace(PLATEAU_CFG, metrics=(), lr_schedule=LRSchedule(
            "reduce_on_plateau", monitor="val_accuracy")))
    piecewise = dataclasses.replace(PLATEAU_CFG, lr_schedule=LRSchedule("piecewise", boundaries=(5,), values=(0.5, 0.1)))
    validate_config(piecewise)
    with pytest.raises(UserError, match="first value"):
        validate_config(override(piecewise, lr=0.1))
    validate_config(COSINE_CFG)  # lr=0 starts a warmup
    with pytest.raises(UserError, match="must be positive"):
        validate_config(dataclasses.replace(COSINE_CFG, lr_schedule=None))
    with pytest.raises(UserError, match="at most one"):
        validate_config(dataclasses.replace(COSINE_CFG, optimizer=OptimizerConfig("sgd", 0.1, clipnorm=1.0,
                                                                                    clipvalue=1.0)))
    # a clipping flag replaces the spec's clipping; another optimizer keeps it
    cfg = override(COSINE_CFG, clipvalue=0.2)
    assert (cfg.optimizer.clipnorm, cfg.optimizer.clipvalue) == (None, 0.2)
    cfg = override(COSINE_CFG, optimizer="adamw")
    assert cfg.optimizer.clipnorm == 0.5 and cfg.optimizer.weight_decay == 0.004 and cfg.optimizer.lr == 0.001


# --- the checker ------------------------------------------------------------------------------------

HEAD = "model m\ninput x: float32[4]\ndense 3 activation=softmax\ntrain {\n  loss sparse_categorical_crossentropy\n"


def _diags(lines: str):
    r = check_source(HEAD + lines + "}\n")
    return [(d.code, d.span.line, d.span.col, d.message) for d in r.diagnostics if d.severity == "error"], r


MISTAKES = [
    ("  optimizer adamx\n", "bad-train", 6, "adamx", "unknown optimizer 'adamx'; did you mean 'adam"),
    ("  optimizer Nadam\n", "bad-train", 6, "Nadam", "did you mean 'nadam'?"),
    ("  optimizer adamax\n", "keras-only", 6, "adamax", "Keras's optimizer 'adamax' is not in nnc"),
    ("  optimizer adamw lr=-0.1\n", "bad-value", 6, "-0.1", "expected a number at least 0"),
    ("  optimizer adam lr=0\n", "bad-value", 6, "0", "the learning rate must be positive"),
    ("  optimizer nadam betta_1=0.9\n", "unknown-option", 6, "betta_1", "did you mean 'beta_1'?"),
    ("  optimizer adagrad initial_accumulator_value=-1\n", "bad-value", 6, "-1", "expected a number at least 0"),
    ("  optimizer sgd clipnorm=0\n", "bad-value", 6, "0", "clipnorm must be positive"),
    ("  optimizer sgd clipvalue=-1\n", "bad-value", 6, "-1", "expected a number at least 0"),
    ("  optimizer sgd clipnorm=1 global_clipnorm=2\n", "bad-train", 6, "global_clipnorm", "at most one of"),
    ("  lr_schedule cosin decay_steps=10\n", "bad-train", 6, "cosin", "did you mean 'cosine'?"),
    ("  lr_schedule CosineDecay decay_steps=10\n", "bad-train", 6, "Cosine", "nnc writes Keras's CosineDecay as 'cosine'"),
    ("  lr_schedule PolynomialDecay\n", "keras-only", 6, "Poly", "Keras's schedule 'PolynomialDecay' is not in nnc"),
    ("  lr_schedule\n", "bad-train", 6, "lr_schedule", "lr_schedule needs a kind"),
    ("  lr_schedule cosine\n", "missing-option", 6, "cosine", "cosine needs decay_steps="),
    ("  lr_schedule cosine decay_steps=0\n", "bad-value", 6, "0", "expected a positive integer"),
    ("  lr_schedule cosine decay_steps=10 warmup_steps=5\n", "bad-train", 6, "5", "warmup_steps needs warmup_target"),
    ("  lr_schedule cosine decay_steps=10 warmup_target=0.1\n", "bad-train", 6, "0.1", "warmup_target needs warmup_steps"),
    ("  lr_schedule exponential decay_steps=10\n", "missing-option", 6, "exponential", "exponential needs decay_rate="),
    ("  lr_schedule exponential decay_rate=0 decay_steps=10\n", "bad-value", 6, "0", "decay_rate must be positive"),
    ("  lr_schedule exponential decay_steps=2.5 decay_rate=0.5\n", "bad-value", 6, "2.5", "expected a positive integer"),
    ('  lr_schedule piecewise boundaries=[10, 10] values="0.1, 0.01, 0.001"\n', "bad-value", 6, "[10, 10]",
     "boundaries must increase strictly, but 10 follows 10"),
    ('  lr_schedule piecewise boundaries=[10, 20] values="0.1, 0.01"\n', "bad-value", 6, '"0.1',
     "2 boundaries need 3 values"),
    ('  lr_schedule piecewise boundaries=[10] values="0.1, x"\n', "bad-value", 6, '"0.1', "expected a list like"),
    ('  lr_schedule piecewise boundaries=[-1] values="0.1, 0.2"\n', "bad-value", 6, "[-1]", "expected steps"),
    ('  optimizer sgd lr=0.1\n  lr_schedule piecewise boundaries=[10] values="0.2, 0.01"\n', "bad-train", 6, "0.1",
     "not the piecewise schedule's first value"),
    ("  lr_schedule reduce_on_plateau factor=1.0\n", "bad-value", 6, "1.0", "between 0 and 1 (excluded)"),
    ("  lr_schedule reduce_on_plateau patience=-1\n", "bad-value", 6, "-1", "expected an integer"),
    ("  lr_schedule reduce_on_plateau monitor=val_acuracy\n", "bad-value", 6, "val_acuracy", "did you mean 'val_accuracy'?"),
    ("  lr_schedule reduce_on_plateau monitor=val_accuracy\n", "bad-train", 6, "val_accuracy",
     "reduce_on_plateau monitors val_accuracy, but accuracy is not among the metrics"),
    ("  lr_schedule reduce_on_plateau factor=0.5\n  lr_schedule cosine decay_steps=5\n", "bad-train", 7, "lr_schedule",
     "train key 'lr_schedule' is given twice"),
    ("  lr_schedules cosine decay_steps=5\n", "bad-train", 6, "lr_schedules", "did you mean 'lr_schedule'?"),
]


@pytest.mark.parametrize("lines,code,line,at,fragment", MISTAKES)
def test_checker_locates_each_mistake(lines, code, line, at, fragment):
    """`at`: the text the diagnostic's span starts at, on its line."""
    errors, _ = _diags(lines)
    assert errors, lines
    first = errors[0]
    col = (HEAD + lines).splitlines()[line - 1].index(at) + 1
    assert (first[0], first[1], first[2]) == (code, line, col), errors
    assert fragment in first[3], errors


GOOD = [
    ("  optimizer adamw\n", dict(optimizer=OptimizerConfig("adamw", 0.001, weight_decay=0.004))),
    ("  optimizer nadam lr=0.002 clipnorm=1.0\n", dict(optimizer=OptimizerConfig("nadam", 0.002, clipnorm=1.0))),
    ("  optimizer adagrad learning_rate=0.05 global_clipnorm=5\n",
     dict(optimizer=OptimizerConfig("adagrad", 0.05, global_clipnorm=5.0))),
    ("  optimizer sgd clipvalue=0.5 weight_decay=0.01\n",
     dict(optimizer=OptimizerConfig("sgd", 0.01, clipvalue=0.5, weight_decay=0.01))),
    ("  optimizer adam lr=0\n  lr_schedule cosine decay_steps=100 warmup_target=0.001 warmup_steps=10\n",
     dict(optimizer=OptimizerConfig("adam", 0.0), lr_schedule=LRSchedule("cosine", 100, warmup_target=0.001,
                                                                        warmup_steps=10))),
    ("  lr_schedule exponential decay_steps=100 decay_rate=0.96 staircase=true\n",
     dict(lr_schedule=LRSchedule("exponential", decay_steps=100, decay_rate=0.96, staircase=True))),
    ('  optimizer sgd momentum=0.9\n  lr_schedule piecewise boundaries=[1000, 2000] values="0.1, 0.01, 0.001"\n',
     dict(optimizer=OptimizerConfig("sgd", 0.1, momentum=0.9),
          lr_schedule=LRSchedule("piecewise", boundaries=(1000, 2000), values=(0.1, 0.01, 0.001)))),
    ('  lr_schedule piecewise boundaries="[5]" values=[1, 0]\n',
     dict(optimizer=OptimizerConfig("rmsprop", 1.0), lr_schedule=LRSchedule("piecewise", boundaries=(5,), values=(1.0, 0.0)))),
    ("  metrics accuracy\n  validation_split 0.2\n  lr_schedule reduce_on_plateau monitor=val_accuracy factor=0.5 "
     "patience=3 cooldown=1 min_lr=1e-5\n",
     dict(lr_schedule=LRSchedule("reduce_on_plateau", monitor="val_accuracy", factor=0.5, patience=3, cooldown=1,
                                 min_lr=1e-5))),
]


@pytest.mark.parametrize("lines,want", GOOD)
def test_checker_accepts_and_binds(lines, want):
    errors, r = _diags(lines)
    assert not errors, errors
    cfg = r.model.train
    for key, value in want.items():
        assert getattr(cfg, key) == value, (key, getattr(cfg, key))


# --- the command line ----------------------------------------------------------------------------------


def test_cli_optimizer_and_clipping_flags_and_fixed_schedule_on_resume(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    spec = tmp_path / "s.nnspec"
    spec.write_text("model tiny\ninput x: float32[4]\ndense 3 activation=softmax\ntrain {\n"
                    "  loss sparse_categorical_crossentropy\n  optimizer sgd lr=0.1 clipnorm=1\n"
                    "  lr_schedule exponential decay_steps=2 decay_rate=0.5\n  epochs 1\n  batch_size 8\n}\n")
    out = str(tmp_path / "run")
    assert main(["train", str(spec), "--data", str(tmp_path / "d.npz"), "--out", out, "--optimizer", "adamw",
                 "--global-clipnorm", "2"]) == 0
    said = capsys.readouterr().out
    assert "optimizer adamw lr=0.001 weight_decay=0.004 global_clipnorm=2, lr_schedule exponential decay_steps=2" in said
    _, meta = read_state(out)
    assert meta["config"]["optimizer"]["global_clipnorm"] == 2 and meta["config"]["optimizer"]["clipnorm"] is None
    assert meta["iterations"] == 5
    assert main(["train", "--resume", out, "--clipnorm", "1"]) == 2
    assert "--clipnorm cannot change when resuming" in capsys.readouterr().err
    assert main(["train", "--resume", out, "--epochs", "2"]) == 0
    _, meta = read_state(out)
    assert meta["config"]["lr_schedule"]["kind"] == "exponential" and meta["iterations"] == 10
