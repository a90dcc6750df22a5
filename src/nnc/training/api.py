"""Training and inference on arrays in memory, from Python: `nnc.fit`, `nnc.evaluate`, `nnc.predict`.

    import nnc
    model = nnc.load("specs/digits_convnet.nnspec")            # or pass the path itself
    h = nnc.fit(model, x, y, validation_data=(x_val, y_val), epochs=5)
    h.history["val_loss"], h.weights                            # Keras's History, plus the weights
    probs = nnc.predict(model, x_test, weights=h)               # softmax included, as model.predict
    nnc.evaluate(model, x_test, y_test, weights=h)              # {"loss": ..., "accuracy": ...}

`fit` runs the loop of `nnc train` (nnc.training.loop.Trainer): the same seeds, shuffling, validation,
early stopping, progress and, with `out=DIR`, the same checkpoints, so `nnc.fit` on arrays and
`nnc train --data FILE.npz` on the same arrays give bit-identical histories and weights. The
arrays are prepared as a file's are (see nnc.training.data.from_arrays) and refused with the same
messages, naming `x`, `y` or `validation_data`.
"""

from __future__ import annotations

import dataclasses
import os

from nnc.lang.errors import SpecError, UserError

_ALIASES = {"learning_rate": "lr"}


class Callback:
    """A base for fit's callbacks (any object with some of these methods will do, as in Keras).

    - on_train_begin(logs), on_train_end(logs): once per fit (on_train_end gets the last epoch's logs);
    - on_epoch_begin(epoch, logs), on_epoch_end(epoch, logs): epoch counts from 0, logs holds
      loss, the metrics and val_* as they go into the history;
    - on_batch_end(step, logs): after each optimizer step, with the epoch's running averages.

    logs are copies: changing them changes nothing. Setting `self.stop_training = True` ends the
    run after the current step (that epoch is validated and recorded, as Keras does) and the run
    counts as stopped, as with early stopping. `self.trainer` is the running nnc.training.loop.Trainer:
    `trainer.net.weights` (the current weights), `trainer.state`, `trainer.cfg`."""

    stop_training = False
    trainer = None

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_end(self, step, logs=None):
        pass


class History:
    """What nnc.fit returns, as Keras's fit returns a History: `history` ({"loss": [...],
    "val_loss": [...], ...}, one value per epoch), `epoch` ([0, 1, ...]) and `params`; and,
    since an nnc Model is a checked spec and holds no weights, `weights` (the trained arrays,
    {"dense_1.kernel": ..., ...}, what `weights=` of predict and evaluate and `nnc compile
    --weights` take), `config` (the nnc.lang.model.TrainConfig the run used), `out` (the run's
    folder or None) and `stopped_epoch` (0-based; None if the run was not stopped)."""

    def __init__(self, history, weights, model, config, out, stopped_epoch, steps, verbose):
        self.history = history
        self.weights = weights
        self.model = model
        self.config = config
        self.out = out
        self.stopped_epoch = stopped_epoch
        self.epoch = list(range(len(history.get("loss", []))))
        self.params = {"epochs": config.epochs, "steps": steps, "verbose": verbose}

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items() if v)
        return f"<nnc History of {self.model.name}: {len(self.epoch)} epochs, {last}>"


def fit(model, x, y, validation_data=None, validation_split=None, epochs=None, batch_size=None, callbacks=(),
        out=None, resume=False, seed=None, verbose="auto", engine="numpy", device="cpu", **overrides) -> History:
    """Train `model` (a checked nnc.Model, a CheckResult, or the path of a spec) on the arrays x, y
    with the spec's train block, as `nnc train` would; returns a History (`.history`, `.weights`).

    - validation_data=(x_val, y_val) validates on those arrays and takes precedence over
      validation_split (the last fraction of x, y, taken before shuffling), as in Keras.
    - epochs, batch_size, validation_split, seed and **overrides replace the train block's
      settings; overrides are the flags of `nnc train` with underscores: lr (or learning_rate),
      momentum, weight_decay, optimizer, loss, shuffle, patience, monitor, class_weight (a list
      by class id, or Keras's {class id: weight} with 1.0 for the classes left out), ...
    - callbacks: see nnc.Callback.
    - out=DIR checkpoints every epoch into DIR (weights.npz, history.json, state.npz, and
      curves.png at the end) exactly as `nnc train --out DIR`; without it nothing is written.
      resume=True continues the run in `out` (only epochs may change: the new total).
    - engine="torch" trains with PyTorch (pip install 'nnc[torch]'), device="cuda" on the GPU;
      the default is nnc's NumPy engine. Both give the same history and weights (float rounding).
    - verbose: "auto" or 1 (a progress line per epoch, redrawn on a terminal), 2 (one printed
      line per epoch), 0 (silent).

    Subnormal floats are flushed to zero while it trains (NNC_SUBNORMALS=keep keeps them; see
    nnc.engines.numpy.fpenv); the calling thread's floating-point flags are as before when it returns.
    Problems with the arrays or settings raise nnc.UserError (nnc.SpecError for a bad spec)."""
    from nnc.training.data import from_arrays
    from nnc.training.loop import (
        CURVES,
        STATE,
        Trainer,
        claim_run_dir,
        config_from_json,
        default_config,
        override,
        plot_curves,
        read_state,
        refuse_new_run_dir,
        validate_config,
    )

    model, source = _model(model)
    progress = _progress(verbose)
    callbacks = _callbacks(callbacks)
    flags = _flags(model, overrides, epochs=epochs, batch_size=batch_size, validation_split=validation_split,
                   seed=seed)
    if out is not None:
        out = os.fspath(out)
    lock = meta = arrays = None
    try:
        if resume:
            if out is None:
                raise UserError("resume=True needs out=: the folder of the run to continue")
            given = [k for k in flags if k != "epochs"]
            if given:
                raise UserError(f"{given[0]} cannot change when resuming: the run continues with the settings it "
                                "started with (only epochs may raise the total)")
            if not os.path.isdir(out):
                raise UserError(f"cannot resume from {out}: it holds no {STATE} (there is no such folder)")
            lock = claim_run_dir(out)
            arrays, meta = read_state(out)
            cfg = config_from_json(meta["config"])
            if epochs is not None:
                cfg = dataclasses.replace(cfg, epochs=epochs)
            source = source or meta["spec_source"]
        else:
            if model.train is not None:
                cfg = model.train
            else:
                cfg, note = default_config(model)
                progress.say(note)
            if validation_data is not None:
                if "patience" in flags and "monitor" not in flags and cfg.early_stopping is None:
                    flags["monitor"] = "val_loss"  # override() picks it only for a validation split
                flags["validation_split"] = 0.0  # validation_data replaces it, as in Keras
            cfg = override(cfg, **flags)
        data = from_arrays(x, y, model, cfg.loss, validation_data)
        validate_config(cfg, validation_data=data.x_val is not None)  # before a folder is made for the run
        if out is not None and not resume:  # claimed once the data is known to fit: a refusal leaves nothing
            hint = f"continue it with nnc.fit(..., out={out!r}, resume=True), or choose another out"
            refuse_new_run_dir(out, hint)
            lock = claim_run_dir(out)
            refuse_new_run_dir(out, hint)  # another run finished there meanwhile
        for note in data.notes:
            progress.say(note)
        trainer = Trainer(model, cfg, data, out, spec_source=source, progress=progress, callbacks=callbacks,
                          engine=engine, device=device)
        if meta is not None:
            trainer.restore(arrays, meta)
            trainer.save()  # weights.npz and history.json derive from state.npz (as nnc train --resume)
        history = trainer.fit()
        if out is not None:
            plot_curves(history, os.path.join(out, CURVES), title=model.name)
    finally:
        if lock is not None:
            lock.close()  # the folder's lock: another run may use it now
    steps = -(-len(trainer.x) // cfg.batch_size)
    return History(history, trainer.net.weights, model, cfg, out, trainer.state.stopped_epoch, steps, verbose)


def evaluate(model, x, y, weights=None, batch_size=None) -> dict[str, float]:
    """The loss and metrics of the spec's train block (Keras's defaults without one) on x, y, with
    `weights` (a History, a dict of arrays, a weights .npz, or a run's folder), dropout off: as
    `nnc eval` and Keras's evaluate(..., return_dict=True) compute them. Returns {"loss": ..., ...}."""
    from nnc.engines.numpy import Network
    from nnc.training.data import from_arrays
    from nnc.training.loop import default_config
    from nnc.training.loop import evaluate as _evaluate

    model, _ = _model(model)
    w = _weights(model, weights, "evaluate")
    cfg = model.train or default_config(model)[0]
    data = from_arrays(x, y, model, cfg.loss)
    return _evaluate(Network(model, w), data.x_train, data.y_train, cfg.loss, cfg.metrics,
                     _batch_size(batch_size, 256), cfg=cfg)


def predict(model, x, weights=None, batch_size=None):
    """The model's output on x (dropout off, the final softmax or sigmoid applied: what Keras's
    predict returns), with `weights` as evaluate takes them. x is prepared as fit prepares it."""
    from nnc.engines.numpy import Network
    from nnc.training.data import _array, prepare_x

    model, _ = _model(model)
    w = _weights(model, weights, "predict")
    xs = prepare_x(_array(x, "x"), "x", model, None, [])
    return Network(model, w).predict(xs, _batch_size(batch_size, 1024))


# --- arguments -----------------------------------------------------------------------------------


def _model(model):
    """(Model, its spec's text or "") from a Model, a CheckResult or a path."""
    from nnc.lang.model import CheckResult, Model

    if isinstance(model, (str, os.PathLike)):
        from nnc.lang.checker import check_file

        result = check_file(os.fspath(model))
        if not result.ok:
            raise SpecError(result)
        return result.model, result.source
    if isinstance(model, CheckResult):
        if not model.ok:
            raise SpecError(model)
        return model.model, model.source
    if isinstance(model, Model):
        source = ""
        if model.path and os.path.isfile(model.path):
            try:
                with open(model.path, encoding="utf-8") as f:
                    source = f.read()
            except (OSError, UnicodeDecodeError):
                pass
        return model, source
    raise UserError(f"model must be a checked nnc.Model (nnc.load(PATH)) or the path of a spec, "
                    f"received {type(model).__name__}")


def _progress(verbose):
    from nnc.training.loop import Progress

    if verbose in ("auto", 1, True):
        return Progress()
    if verbose == 2:
        return Progress(tty=False)
    if verbose in (0, False, None):
        return Progress(quiet=True)
    raise UserError(f"verbose must be 'auto', 0, 1 or 2, received {verbose!r}")


def _callbacks(callbacks) -> tuple:
    if callbacks is None:
        return ()
    if not isinstance(callbacks, (list, tuple)):
        callbacks = (callbacks,)
    hooks = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_batch_end")
    for cb in callbacks:
        if not any(callable(getattr(cb, h, None)) for h in hooks):
            raise UserError(f"the callback {cb!r} has none of the methods {', '.join(hooks)}",
                            help="derive it from nnc.Callback")
    return tuple(callbacks)


def _flags(model, overrides: dict, **named) -> dict:
    """The settings given (not None), checked against the flags of `nnc train`."""
    from nnc.training.flags import override_actions

    actions = override_actions()
    given = {k: v for k, v in named.items() if v is not None}
    for key, value in overrides.items():
        key = _ALIASES.get(key, key)
        if key not in actions:
            raise UserError(f"nnc.fit got an unknown setting {key}=",
                            help="it takes " + ", ".join(sorted(actions)) + "; anything else goes in the spec's "
                                 "train block")
        if value is not None:
            given[key] = value
    for key, value in list(given.items()):
        given[key] = _check_value(model, key, value, actions[key])
    return given


def _check_value(model, key: str, value, action):
    import argparse

    if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
        if not isinstance(value, bool):
            raise UserError(f"{key} must be True or False, received {value!r}")
        return value
    if action.nargs in ("+", "*"):  # class_weight: one value per class id
        if key == "class_weight" and isinstance(value, dict):
            value = _class_weight_list(model, value)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise UserError(f"{key} must be a list, received {value!r}")
        return [_scalar(key, v, action) for v in value]
    return _scalar(key, value, action)


def _scalar(key, value, action):
    import numbers

    if action.type in (int, float):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if action.type is int:
            ok = ok and float(value) == int(value)
        if not ok:
            raise UserError(f"{key} must be {'a whole number' if action.type is int else 'a number'}, "
                            f"received {value!r}")
        value = action.type(value)
    if action.choices is not None and value not in action.choices:
        raise UserError(f"{key}={value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def _class_weight_list(model, weights: dict) -> list:
    """Keras's {class id: weight} as nnc's list by class id; a class left out weighs 1.0."""
    units = model.output_shape[-1] if model.output_shape else 1
    classes = 2 if units == 1 else units  # one sigmoid: classes 0 and 1
    bad = [k for k in weights if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < classes]
    if bad:
        raise UserError(f"class_weight has a key {bad[0]!r}, but class ids are 0 to {classes - 1}")
    return [weights.get(c, 1.0) for c in range(classes)]


def _weights(model, weights, what: str) -> dict:
    from nnc.lang.weights import load_checkpoint, validate
    from nnc.training.loop import WEIGHTS

    if weights is None:
        raise UserError(f"nnc.{what} needs weights=: the History nnc.fit returned, a dict of arrays, a weights "
                        ".npz or a run's folder")
    if isinstance(weights, History):
        weights = weights.weights
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if os.path.isdir(path):
            path = os.path.join(path, WEIGHTS)
        if not os.path.isfile(path):
            raise UserError(f"cannot read weights {path}: no such file")
        return load_checkpoint(path, model)
    if not isinstance(weights, dict):
        raise UserError(f"weights must be a History, a dict of arrays or a path, received {type(weights).__name__}")
    return validate(model, weights, source="weights")


def _batch_size(batch_size, default: int) -> int:
    if batch_size is None:
        return default
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a whole number of at least 1, received {batch_size!r}")
    return batch_size
