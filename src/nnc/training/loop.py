"""The training loop of `nnc train`, with Keras's semantics, on the NumPy backend.

- Validation data is the *last* `validation_split` of the training arrays, taken before any
  shuffling (Keras's `fit(validation_split=...)`: split_at = floor(n * (1 - split))).
- Each epoch draws its permutation, then its dropout masks, from
  `numpy.random.default_rng([seed, epoch])`, and the initial weights come from `seed`; so the same
  seed gives bit-identical weights, and a resumed run needs no saved RNG stream.
- An epoch's training loss is averaged over its batches weighted by batch size, and its metrics
  (nnc.training.metrics) accumulate over its batches, as Keras reports them; class_weight weighs the
  training loss only; validation runs with dropout off after the epoch. Both losses include
  the `l1=`/`l2=` penalty (nnc.training.losses.regularization), as Keras's compute_loss adds it.
- batchnorm's moving statistics are weights that no gradient reaches: its training forward
  updates them in place (net.weights), and they are checkpointed with the others.
- After every epoch the run is checkpointed atomically into the output folder:
  `state.npz` (weights, optimizer slots, epoch, history, early-stopping and reduce_on_plateau
  state, the spec, and hashes of spec and data) is the single source of truth for `--resume`; `weights.npz` (the
  model's arrays alone, for `nnc compile --weights`) and `history.json` follow it. A run killed
  at any moment resumes from the last completed epoch and ends with the same weights as a run
  that was never interrupted. `curves.png` is drawn when the run ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Callable, TextIO

import numpy as np

from nnc.lang.errors import UserError
from nnc.lang.metric_rules import class_weight_misfit, maximized
from nnc.lang.model import EarlyStopping, LRSchedule, Model, OptimizerConfig, TrainConfig
from nnc.lang.weights import atomic_open, init_weights, save_checkpoint
from nnc.training.losses import SMOOTHABLE, loss_and_grad, loss_options, regularization
from nnc.training.metrics import make_metrics
from nnc.training.schedules import Plateau

STATE, WEIGHTS, HISTORY, CURVES = "state.npz", "weights.npz", "history.json", "curves.png"
STATE_VERSION = 1
# history.json is Keras's History.history (metric name -> a list, one number an epoch) plus one
# integer, "schema_version" (`nnc schema history`): a reader that walks every key skips it.
HISTORY_SCHEMA_VERSION = 1
EVAL_SCHEMA_VERSION = 1  # of `nnc eval --format json` (`nnc schema eval`)


# --- configuration -----------------------------------------------------------------------------


def default_config(model: Model) -> tuple[TrainConfig, str]:
    """Keras's fit/compile defaults (RMSprop lr=0.001, batch 32, one epoch), with the loss and
    metric chosen from the model's output, for a spec without a train block."""
    last = _final_activation(model)
    units = model.output_shape[-1] if model.output_shape else 1
    if last == "softmax" and units > 1:
        loss, why = "sparse_categorical_crossentropy", f"the model ends in softmax over {units} classes"
    elif last == "sigmoid":
        loss, why = "binary_crossentropy", "the model ends in sigmoid"
    else:
        loss, why = "mse", "the model's output is not a probability"
    metrics = ("accuracy",) if loss != "mse" else ()
    cfg = TrainConfig(loss=loss, metrics=metrics)
    return cfg, (f"{model.path or model.name} has no train block: training with loss {loss} ({why})"
                 f"{', metrics accuracy' if metrics else ''}, optimizer rmsprop lr=0.001, batch_size 32, "
                 f"epochs 1 (Keras's defaults)")


def _final_activation(model: Model) -> str:
    from nnc.lang.kinds import layer_activation
    from nnc.lang.model import Block

    # the last step of the body (a repeat's last step is its own); a merge's output is not activated
    nodes = list(model.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, Block):
            if node.merge is not None:
                return "linear"
            nodes.extend(node.branches[0])
        elif node.kind != "dropout":
            return layer_activation(node.kind, node.options)
    return "linear"


def override(cfg: TrainConfig, **flags) -> TrainConfig:
    """Apply command-line flags (None = not given) over the spec's train block."""
    opt = cfg.optimizer
    if flags.get("optimizer") and flags["optimizer"] != opt.name:
        from nnc.lang.checker import OPTIMIZERS

        defaults = {o.name: o.default for o in OPTIMIZERS[flags["optimizer"]]}
        fields = {f.name for f in dataclasses.fields(OptimizerConfig)}
        opt = OptimizerConfig(name=flags["optimizer"], **{k: v for k, v in defaults.items() if k in fields})
        # clipping is the base optimizer's: it carries over to the other optimizer
        opt = dataclasses.replace(opt, **{k: getattr(cfg.optimizer, k) for k in _CLIPS})
    for key in ("lr", "momentum", "weight_decay"):
        if flags.get(key) is not None:
            opt = dataclasses.replace(opt, **{key: flags[key]})
    for key in _CLIPS:  # Keras takes one of the three: a flag replaces the spec's
        if flags.get(key) is not None:
            opt = dataclasses.replace(opt, **{k: flags[key] if k == key else None for k in _CLIPS})
    changes = {k: flags[k] for k in ("loss", "epochs", "batch_size", "validation_split", "seed", "shuffle")
               if flags.get(k) is not None}
    if flags.get("patience") is not None or flags.get("monitor") is not None:
        es = cfg.early_stopping or EarlyStopping(monitor="val_loss" if (changes.get("validation_split",
                                                 cfg.validation_split)) else "loss")
        if flags.get("patience") is not None:
            es = dataclasses.replace(es, patience=flags["patience"])
        if flags.get("monitor") is not None:
            es = dataclasses.replace(es, monitor=flags["monitor"])
        changes["early_stopping"] = es
    if flags.get("loss") and flags["loss"] != cfg.loss and "accuracy" in cfg.metrics and flags["loss"] == "mse":
        changes["metrics"] = tuple(m for m in cfg.metrics if m != "accuracy")
    if flags.get("loss") and flags["loss"] != cfg.loss:  # another loss: with Keras's defaults for its options
        changes["huber_delta"], changes["label_smoothing"] = 1.0, 0.0
    if flags.get("class_weight") is not None:
        changes["class_weight"] = tuple(float(w) for w in flags["class_weight"])
    for key in ("huber_delta", "label_smoothing", "top_k"):
        if flags.get(key) is not None:
            changes[key] = flags[key]
    if flags.get("metrics") is not None:
        changes["metrics"] = _metric_names(flags["metrics"])
    return dataclasses.replace(cfg, optimizer=opt, **changes)


def _metric_names(names) -> tuple[str, ...]:
    """--metrics: Keras's names and aliases, each once, in order (`loss` is always reported),
    given as separate words or comma-separated (`mae,mse`). (nnc.fit refuses a bare string, as
    Keras's compile does.)"""
    from nnc.lang.metric_rules import METRIC_ALIASES, METRICS

    out = []
    for raw in (part.strip() for given in names for part in str(given).split(",") if part.strip()):
        name = METRIC_ALIASES.get(raw, raw)
        if name not in METRICS:
            raise UserError(f"unknown metric '{raw}'", help=f"metrics: {', '.join(METRICS)}")
        if name not in out:
            out.append(name)
    return tuple(out)


_CLIPS = ("clipnorm", "clipvalue", "global_clipnorm")


def _validate_lr(cfg: TrainConfig, validation_data: bool) -> None:
    """The optimizer's learning rate, clipping and lr_schedule (what flags may have changed
    since the checker saw the spec)."""
    o, sched = cfg.optimizer, cfg.lr_schedule
    clips = [k for k in _CLIPS if getattr(o, k) is not None]
    if len(clips) > 1:
        raise UserError(f"{clips[0]} and {clips[1]} are both set; Keras takes at most one of clipnorm, clipvalue "
                        "and global_clipnorm")
    for k in clips:
        if not (math.isfinite(getattr(o, k)) and getattr(o, k) > 0):
            raise UserError(f"{k} must be a positive number, received {getattr(o, k)}")
    warmup = sched is not None and sched.kind == "cosine" and sched.warmup_target is not None
    if sched is not None and sched.kind == "piecewise":
        if o.lr != sched.values[0]:
            raise UserError(f"the learning rate lr={o.lr:g} is not the piecewise schedule's first value "
                            f"{sched.values[0]:g}: the schedule's values are the learning rates",
                            help="leave --lr out with a piecewise schedule")
    elif not (o.lr > 0 or (warmup and o.lr == 0)):
        raise UserError(f"the learning rate must be positive, received lr={o.lr}")
    if sched is not None and sched.kind == "reduce_on_plateau":
        if sched.monitor.startswith("val_") and not (cfg.validation_split or validation_data):
            raise UserError(f"reduce_on_plateau monitors {sched.monitor}, but there is no validation data",
                            help="set validation_split (or --validation-split), or monitor=loss")
        if sched.monitor.removeprefix("val_") not in ("loss",) + tuple(cfg.metrics):
            raise UserError(f"reduce_on_plateau monitors {sched.monitor}, but {sched.monitor.removeprefix('val_')} "
                            "is not among the metrics")


def validate_config(cfg: TrainConfig, validation_data: bool = False) -> None:
    """validation_data: validation arrays are given apart (nnc.fit), not split off."""
    bad = [(k, v) for k, v in dataclasses.asdict(cfg.optimizer).items()
           if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise UserError(f"the optimizer's {bad[0][0]} must be a finite number, received {bad[0][1]}")
    if cfg.seed < 0:
        raise UserError(f"the seed must be 0 or more, received {cfg.seed}")
    if cfg.epochs < 1:
        raise UserError(f"epochs must be at least 1, received {cfg.epochs}")
    if cfg.batch_size < 1:
        raise UserError(f"batch_size must be at least 1, received {cfg.batch_size}")
    if not 0 <= cfg.validation_split < 1:
        raise UserError(f"validation_split must be in [0, 1), received {cfg.validation_split}")
    _validate_lr(cfg, validation_data)
    es = cfg.early_stopping
    if es is not None and es.monitor.startswith("val_") and not (cfg.validation_split or validation_data):
        raise UserError(f"early stopping monitors {es.monitor}, but there is no validation data",
                        help="set validation_split (or --validation-split), or monitor loss")
    if not (math.isfinite(cfg.huber_delta) and cfg.huber_delta > 0):
        raise UserError(f"huber's delta must be positive, received {cfg.huber_delta}")
    if cfg.huber_delta != 1.0 and cfg.loss != "huber":
        raise UserError(f"delta is huber's, but the loss is {cfg.loss}", help="add --loss huber, or leave delta out")
    if not 0 <= cfg.label_smoothing <= 1:
        raise UserError(f"label_smoothing must be in [0, 1], received {cfg.label_smoothing}")
    if cfg.label_smoothing and cfg.loss not in SMOOTHABLE:
        raise UserError(f"{cfg.loss} takes no label_smoothing (Keras's has none)",
                        help="label_smoothing goes with categorical_crossentropy or binary_crossentropy")
    if cfg.top_k < 1:
        raise UserError(f"top_k_accuracy's k must be at least 1, received {cfg.top_k}")
    bad = [w for w in cfg.class_weight if not (math.isfinite(w) and w >= 0)]
    if bad:
        raise UserError(f"class weights must be finite and 0 or more, received {bad[0]}")
    if es is not None and es.monitor.removeprefix("val_") not in ("loss",) + tuple(cfg.metrics):
        raise UserError(f"early stopping monitors {es.monitor}, but {es.monitor.removeprefix('val_')} is not among "
                        f"the metrics")


def config_to_json(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def config_from_json(d: dict) -> TrainConfig:
    d = dict(d)
    d["optimizer"] = OptimizerConfig(**d["optimizer"])
    d["metrics"] = tuple(d["metrics"])
    if "class_weight" in d:
        d["class_weight"] = tuple(d["class_weight"])
    if d.get("early_stopping") is not None:
        d["early_stopping"] = EarlyStopping(**d["early_stopping"])
    if d.get("lr_schedule") is not None:
        sched = dict(d["lr_schedule"])
        sched["boundaries"], sched["values"] = tuple(sched["boundaries"]), tuple(sched["values"])
        d["lr_schedule"] = LRSchedule(**sched)
    return TrainConfig(**d)


def describe(cfg: TrainConfig) -> str:
    o = cfg.optimizer
    extra = "".join(f" {k}={getattr(o, k):g}" for k in ("momentum", "weight_decay") if getattr(o, k))
    if o.nesterov:
        extra += " nesterov=true"
    if o.amsgrad:
        extra += " amsgrad=true"
    extra += "".join(f" {k}={getattr(o, k):g}" for k in _CLIPS if getattr(o, k) is not None)
    if cfg.lr_schedule is not None:
        extra += f", lr_schedule {describe_schedule(cfg.lr_schedule)}"
    es = cfg.early_stopping
    loss = cfg.loss + (f" delta={cfg.huber_delta:g}" if cfg.loss == "huber" else "") + (
        f" label_smoothing={cfg.label_smoothing:g}" if cfg.label_smoothing else "") + (
        f" (class_weight {' '.join(f'{w:g}' for w in cfg.class_weight)})" if cfg.class_weight else "")
    return (f"loss {loss}, optimizer {o.name} lr={o.lr:g}{extra}, batch_size {cfg.batch_size}, "
            f"epochs {cfg.epochs}, validation_split {cfg.validation_split:g}, seed {cfg.seed}"
            + (f", early stopping on {es.monitor} (patience {es.patience})" if es else ""))


def describe_schedule(s: LRSchedule) -> str:
    """An lr_schedule as the train block writes it (its options that matter to its kind)."""
    keys = {"cosine": ("decay_steps", "alpha") + (("warmup_target", "warmup_steps") if s.warmup_target is not None else ()),
            "exponential": ("decay_steps", "decay_rate", "staircase"), "piecewise": ("boundaries", "values"),
            "reduce_on_plateau": ("monitor", "factor", "patience", "min_delta", "cooldown", "min_lr")}[s.kind]

    def text(v):
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, tuple):
            return "[" + ", ".join(f"{x:g}" for x in v) + "]"
        return f"{v:g}" if isinstance(v, (int, float)) else str(v)

    return s.kind + "".join(f" {k}={text(getattr(s, k))}" for k in keys)


# --- evaluation --------------------------------------------------------------------------------


ENGINES = ("numpy", "torch")


def make_engine(engine: str, model: Model, weights: dict[str, np.ndarray], cfg: TrainConfig, device: str = "cpu",
                world=None):
    """The engine that computes a training run's steps and inference: `numpy` (nnc.engines.numpy, the
    reference, CPU) or `torch` (nnc.engines.torch, CPU or CUDA; `world`: its DistributedDataParallel
    processes). Both take and give weights in Keras layouts and the same optimizer state."""
    if engine == "numpy":
        if device != "cpu":
            raise UserError(f"the NumPy engine runs on the CPU; --device {device} needs --engine torch")
        if world is not None:
            raise UserError("several processes (torchrun) train with the PyTorch engine: add --engine torch")
        from nnc.engines.numpy.engine import NumpyEngine

        return NumpyEngine(model, weights, cfg)
    if engine == "torch":
        from nnc.engines.torch import TorchEngine

        return TorchEngine(model, weights, cfg, device=device, world=world)
    raise UserError(f"unknown engine {engine!r}: {' or '.join(ENGINES)}")


def model_metrics(model: Model, loss: str, metrics: tuple[str, ...], cfg: TrainConfig | None = None) -> list:
    """nnc.training.metrics objects for `metrics` on `model` trained with `loss` (UserError when one does not fit)."""
    from nnc.lang.checker import final_activation

    return make_metrics(tuple(metrics), loss, model.output_shape, final_activation(model.body or model.layers),
                        cfg.top_k if cfg is not None else 5)


def validate_for_model(model: Model, cfg: TrainConfig) -> list:
    """UserError when the metrics or class_weight do not suit the model and loss (what the checker
    reports, located, for a spec's own train block; flags can change the loss); the metric objects."""
    if cfg.class_weight:
        bad = class_weight_misfit(cfg.loss, model.output_shape, len(cfg.class_weight))
        if bad:
            raise UserError(bad[0], help=bad[1])
    return model_metrics(model, cfg.loss, cfg.metrics, cfg)


def evaluate(net, x: np.ndarray, y: np.ndarray, loss: str, metrics: tuple[str, ...],
             batch_size: int = 256, cfg: TrainConfig | None = None) -> dict[str, float]:
    """Loss (the mean over samples, plus the l1/l2 penalty as Keras's evaluate adds it) and
    metrics of `net` on (x, y), dropout off. `cfg` gives the loss's and metrics' options
    (huber's delta, label_smoothing, top_k_accuracy's k); class_weight never weighs evaluation."""
    tracked = model_metrics(net.model, loss, metrics, cfg)
    options = loss_options(cfg)
    total = 0.0
    for s in range(0, len(x), batch_size):
        z = net.logits(x[s : s + batch_size], batch_size)  # no caches kept: nothing trains here
        yb = y[s : s + batch_size]
        value, _ = loss_and_grad(loss, z, yb, net.final_activation, need_grad=False, **options)
        total += value * len(z)
        for m in tracked:
            m.update(z, yb, net.final_activation)
    out = {"loss": total / len(x) + regularization(net.model, net.weights, need_grad=False)[0]}
    out.update({m.name: m.result() for m in tracked})
    return out


def validation_split_at(n: int, split: float) -> int:
    """Keras: the first floor(n * (1 - split)) samples train, the rest validate."""
    if not split:
        return n
    at = int(math.floor(n * (1.0 - split)))
    if at == 0 or at == n:
        raise UserError(f"validation_split {split:g} of {n} samples leaves "
                        f"{'no training' if at == 0 else 'no validation'} samples", exit_code=1)
    return at


# --- progress ----------------------------------------------------------------------------------


class Progress:
    """One line per epoch: redrawn in place (\\r) on a terminal, printed once when it ends otherwise."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False, tty: bool | None = None):
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.tty = self.stream.isatty() if tty is None else tty
        self._last = 0.0

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def batch(self, epoch: int, epochs: int, step: int, steps: int, logs: dict, elapsed: float) -> None:
        if self.quiet or not self.tty:
            return
        now = time.monotonic()
        if step < steps and now - self._last < 0.1:
            return
        self._last = now
        width = 20
        done = int(width * step / steps)
        bar = "=" * max(done - 1, 0) + (">" if done < width else "=") + "." * (width - done)
        eta = elapsed / step * (steps - step)
        text = f"\repoch {epoch}/{epochs} {step}/{steps} [{bar}] {_fmt_logs(logs)} - ETA {_fmt_time(eta)}"
        self.stream.write(text + "\033[K")
        self.stream.flush()

    def epoch(self, epoch: int, epochs: int, steps: int, logs: dict, elapsed: float, note: str = "") -> None:
        if self.quiet:
            return
        text = f"epoch {epoch}/{epochs} {steps}/{steps} - {_fmt_time(elapsed)} - {_fmt_logs(logs)}{note}"
        if self.tty:
            self.stream.write("\r" + text + "\033[K\n")
            self.stream.flush()
        else:
            print(text, file=self.stream, flush=True)


def _fmt_logs(logs: dict) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


def _fmt_time(seconds: float) -> str:
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


# --- the run -----------------------------------------------------------------------------------


def model_fingerprint(model: Model) -> str:
    """A hash of what training depends on in a checked model (its layers, blocks, options, shapes
    and train block), not of the spec's bytes: a resumed run accepts a spec whose comments or
    layout changed, and refuses one whose model did. (Runs written before this compared the
    bytes; `restore` accepts that hash too.)"""

    def node(n):
        if hasattr(n, "branches"):  # a block
            return ["block", n.name, n.kind, sorted(n.options.items()), [[node(c) for c in b] for b in n.branches]]
        return ["layer", n.name, n.kind, sorted(n.options.items()), list(n.input_shape), list(n.output_shape)]

    desc = [model.name, dataclasses.astuple(model.input), [node(n) for n in (model.body or model.layers)],
            dataclasses.asdict(model.train) if model.train is not None else None]
    return "model:" + hashlib.sha256(json.dumps(desc, default=repr, sort_keys=True).encode()).hexdigest()


TEMP_OUTPUTS = (STATE, WEIGHTS, HISTORY, CURVES)
LOCK = ".nnc-train.lock"


def claim_run_dir(out: str):
    """Create `out` if needed and hold its lock for the life of the process (an open file with an
    exclusive flock): a second run into the same folder is refused, naming the holder. Temporary
    files that a killed run left behind there are removed. Returns the lock's file object."""
    import fcntl
    import glob

    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"cannot train into {out}: it is a file, not a folder", help="choose another --out")
    try:
        os.makedirs(out, exist_ok=True)
        f = open(os.path.join(out, LOCK), "a+")
    except OSError as e:
        raise UserError(f"cannot train into {out}: {e.strerror or e}") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise UserError(f"{out} is being written by another nnc train ({holder})",
                        help="wait for it to finish, or choose another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    for name in TEMP_OUTPUTS:  # atomic_open's temporaries: .NAME.XXXXXXXX.tmp
        for tmp in glob.glob(os.path.join(glob.escape(out), f".{name}.*.tmp")):
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return f


def refuse_new_run_dir(out: str, resume_help: str) -> None:
    """UserError when a new run cannot start in `out`: it holds a run (state.npz; `resume_help`
    says how to continue it), it is a file, or it holds files a run writes but no run (someone
    else's weights.npz next to `--out .`), which training would overwrite."""
    if os.path.exists(os.path.join(out, STATE)):
        raise UserError(f"{out} already holds a training run ({STATE})", help=resume_help)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"cannot train into {out}: it is a file, not a folder", help="choose another output folder")
    clash = [f for f in (WEIGHTS, HISTORY, CURVES) if os.path.lexists(os.path.join(out, f))]
    if clash:
        raise UserError(f"cannot train into {out}: it holds {', '.join(clash)} but no training run ({STATE}), "
                        "and training would overwrite them", help="choose another output folder, or move those files away")


@dataclasses.dataclass
class RunState:
    """Everything a resumed run needs besides the weights and optimizer slots."""

    epoch: int = 0  # epochs completed
    history: dict = dataclasses.field(default_factory=dict)
    best: float | None = None  # early stopping
    best_epoch: int = -1
    wait: int = 0
    stopped_epoch: int | None = None
    # lr_schedule reduce_on_plateau: its callback's state, and the learning rate it has set
    plateau: Plateau = dataclasses.field(default_factory=Plateau)
    lr: float | None = None


class Trainer:
    """Trains `model` on `data` with `cfg`, checkpointing into `out` (None: nothing is written;
    the weights are in `trainer.net.weights`).

    `data` has `name`, `x_train`, `y_train` and `fingerprint()` (nnc.training.data.Dataset); when its
    `x_val`, `y_val` are set they are the validation data, and validation_split is not used
    (Keras's fit(validation_data=...)). `callbacks`: objects with any of on_train_begin(logs),
    on_epoch_begin(epoch, logs), on_batch_end(step, logs), on_epoch_end(epoch, logs),
    on_train_end(logs), and a `stop_training` attribute they may set (see nnc.training.api.Callback).
    `on_step(epoch, step)` is called after each optimizer step (tests use it to interrupt a run)."""

    def __init__(self, model: Model, cfg: TrainConfig, data, out: str | None, spec_source: str = "",
                 progress: Progress | None = None, on_step: Callable[[int, int], None] | None = None,
                 callbacks: tuple = (), engine: str = "numpy", device: str = "cpu", world=None):
        from nnc.engines.numpy import parallel

        given_val = getattr(data, "x_val", None) is not None
        validate_config(cfg, validation_data=given_val)
        self.model, self.cfg, self.data, self.out = model, cfg, data, out
        self.spec_source = spec_source
        self.progress = progress or Progress(quiet=True)
        self.on_step = on_step
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if hasattr(cb, "trainer"):  # nnc.training.api.Callback: the run (weights, state) for the callback to read
                cb.trainer = self
        n = len(data.x_train)
        if given_val:
            self.x, self.y, self.x_val, self.y_val = data.x_train, data.y_train, data.x_val, data.y_val
        else:
            at = validation_split_at(n, cfg.validation_split)
            self.x, self.y = data.x_train[:at], data.y_train[:at]
            self.x_val, self.y_val = (data.x_train[at:], data.y_train[at:]) if at < n else (None, None)
        # a training run owns its process: let malloc keep each batch's freed blocks for the next
        # (process-wide, so Network alone, as a library object, leaves malloc as it is)
        parallel.keep_freed_memory()
        from nnc.lang.weights import check_fits_in_memory

        # weights, gradients and up to two optimizer slots live at once (three: adam's amsgrad)
        check_fits_in_memory(model, copies=4 + bool(cfg.optimizer.amsgrad),
                             what="training (weights, gradients and optimizer slots)")
        # the engine computes (a step, inference); this loop owns data, logs, checkpoints and callbacks
        self.net = make_engine(engine, model, init_weights(model, cfg.seed), cfg, device, world)
        self.opt = self.net.opt
        self.state = RunState()
        self.best_weights: dict[str, np.ndarray] | None = None
        self.spec_sha256 = model_fingerprint(model)
        self.data_sha256 = data.fingerprint()

    # -- checkpoints

    def _meta(self) -> dict:
        s = self.state
        return {"version": STATE_VERSION, "schema_version": STATE_VERSION,  # `nnc schema state`
                "epoch": s.epoch, "iterations": self.opt.iterations,
                "history": s.history, "best": s.best, "best_epoch": s.best_epoch, "wait": s.wait,
                "stopped_epoch": s.stopped_epoch, "config": config_to_json(self.cfg),
                "plateau": dataclasses.asdict(s.plateau), "lr": s.lr,
                "spec_source": self.spec_source, "spec_path": self.model.path or "", "spec_sha256": self.spec_sha256,
                "data": self.data.name, "data_sha256": self.data_sha256}

    def save(self) -> None:
        if self.out is None:  # a run in memory (nnc.fit without out=)
            return
        with _deferred_interrupt():  # the three files describe the same epoch, or the previous one
            self._save()

    def _save(self) -> None:
        arrays = {f"w/{k}": v for k, v in self.net.weights.items()}
        arrays.update({f"opt/{k}": v for k, v in self.opt.state_arrays().items()})
        if self.best_weights is not None:
            arrays.update({f"best/{k}": v for k, v in self.best_weights.items()})
        arrays["meta"] = np.array(json.dumps(self._meta()))
        with atomic_open(os.path.join(self.out, STATE)) as f:
            np.savez(f, **arrays)
        save_checkpoint(os.path.join(self.out, WEIGHTS), self.net.weights)
        with atomic_open(os.path.join(self.out, HISTORY), "w") as f:
            json.dump({"schema_version": HISTORY_SCHEMA_VERSION, **self.state.history}, f, indent=2)
            f.write("\n")

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if meta["spec_sha256"] not in (self.spec_sha256, hashlib.sha256(self.spec_source.encode()).hexdigest()):
            raise UserError(f"{self.out} was trained from a different spec; resume refused", exit_code=1)
        if meta["data_sha256"] != self.data_sha256:
            raise UserError(f"{self.out} was trained on different data than {self.data.name}; resume refused",
                            exit_code=1)
        missing = [k for k in self.net.weights if f"w/{k}" not in arrays]
        bad = [k for k in self.net.weights if f"w/{k}" in arrays and arrays[f"w/{k}"].shape != self.net.weights[k].shape]
        if missing or bad:
            what = f"lacks the weights {', '.join(missing[:3])}" if missing else f"has weights of other shapes ({bad[0]})"
            raise UserError(f"cannot resume from {self.out}: {STATE} {what}; it is not this spec's run, or it is "
                            f"corrupt", exit_code=1)
        self.net.load_weights({k: arrays[f"w/{k}"] for k in self.net.weights})
        self.opt.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}, meta["iterations"])
        best = {k[5:]: np.array(v) for k, v in arrays.items() if k.startswith("best/")}
        self.best_weights = best or None
        try:  # absent from runs of an nnc before lr_schedule: no reduce_on_plateau state then
            plateau, lr = Plateau(**(meta.get("plateau") or {})), meta.get("lr")
            lr = None if lr is None else float(lr)
        except (TypeError, ValueError):
            raise UserError(f"cannot resume from {self.out}: {STATE} has a broken 'plateau' in its metadata "
                            "(it is not a checkpoint of this nnc, or it was edited)", exit_code=1) from None
        self.state = RunState(meta["epoch"], meta["history"], meta["best"], meta["best_epoch"], meta["wait"],
                              meta["stopped_epoch"], plateau, lr)
        if self.state.lr is not None:
            self.opt.lr = self.state.lr

    @property
    def finished(self) -> bool:
        return self.state.stopped_epoch is not None or self.state.epoch >= self.cfg.epochs

    # -- the loop

    def fit(self) -> dict:
        """Train until cfg.epochs, early stopping or a callback's stop; returns the history. The
        threads that compute run with subnormal floats flushed to zero (nnc.engines.numpy.fpenv;
        NNC_SUBNORMALS=keep keeps them), and the caller's flags are back when it returns."""
        from nnc.engines.numpy import fpenv

        with fpenv.flush_subnormals(blas_workers=True):
            return self._fit()

    def _hook(self, name: str, *args) -> None:
        """Call `name` on every callback that has it; logs (the last argument) as a copy."""
        for cb in self.callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                fn(*args[:-1], dict(args[-1]) if args[-1] is not None else None)

    def _stop_requested(self) -> bool:
        return any(getattr(cb, "stop_training", False) for cb in self.callbacks)

    def _fit(self) -> dict:
        cfg, net = self.cfg, self.net
        tracked = validate_for_model(self.model, cfg)
        n = len(self.x)
        steps = math.ceil(n / cfg.batch_size)
        for cb in self.callbacks:
            if hasattr(cb, "stop_training"):
                cb.stop_training = False
        self._hook("on_train_begin", None)
        while not self.finished:
            epoch = self.state.epoch
            rng = np.random.default_rng([cfg.seed, epoch])
            order = rng.permutation(n) if cfg.shuffle else np.arange(n)
            start = time.monotonic()
            total = 0.0
            for m in tracked:  # Keras resets its metrics at the start of every epoch
                m.reset()
            logs: dict[str, float] = {}
            self._hook("on_epoch_begin", epoch, None)
            for step in range(steps):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                xb, yb = self.x[idx], self.y[idx]
                value, z = net.train_step(xb, yb, rng)  # the engine's step; no step when the loss is broken
                if not math.isfinite(value):
                    raise UserError(f"the loss became {value} in epoch {epoch + 1}, step {step + 1}: training diverged",
                                    exit_code=1, help="lower the learning rate (--lr)")
                total += value * len(idx)
                logs = {"loss": total / ((step * cfg.batch_size) + len(idx))}
                for m in tracked:  # not weighted by class_weight, as Keras's compiled `metrics`
                    m.update(z, yb, net.final_activation)
                    logs[m.name] = m.result()
                self.progress.batch(epoch + 1, cfg.epochs, step + 1, steps, logs, time.monotonic() - start)
                if self.on_step:
                    self.on_step(epoch, step)
                self._hook("on_batch_end", step, logs)
                if self._stop_requested():  # as Keras: the epoch ends here, validated and recorded
                    break
            if self.x_val is not None:
                val = evaluate(net, self.x_val, self.y_val, cfg.loss, cfg.metrics, max(cfg.batch_size, 256), cfg=cfg)
                logs.update({f"val_{k}": v for k, v in val.items()})
            lr_note = self._reduce_lr_on_plateau(epoch, logs)
            for k, v in logs.items():
                self.state.history.setdefault(k, []).append(v)
            note = self._early_stopping(epoch, logs) + lr_note
            self._hook("on_epoch_end", epoch, logs)
            if self._stop_requested() and self.state.stopped_epoch is None:
                self.state.stopped_epoch = epoch
                note += " - stopped by a callback"
            self.state.epoch = epoch + 1
            self.save()
            self.progress.epoch(epoch + 1, cfg.epochs, steps, logs, time.monotonic() - start, note)
        es = cfg.early_stopping
        if es is not None and es.restore_best_weights and self.best_weights is not None:
            # Keras restores the best epoch's weights when training ends, stopped early or not
            self.net.load_weights(self.best_weights)
            self.save()
            self.progress.say(f"weights of epoch {self.state.best_epoch + 1} restored (best {es.monitor}: "
                              f"{self.state.best:.4f})")
        self._hook("on_train_end", {k: v[-1] for k, v in self.state.history.items() if v})
        return self.state.history

    def _reduce_lr_on_plateau(self, epoch: int, logs: dict) -> str:
        """keras.callbacks.ReduceLROnPlateau at the end of an epoch: logs the learning rate the
        epoch ran with (`learning_rate`, as Keras 3 logs it, a float32 value) and lowers it for the
        next epochs when the monitored value stopped improving (nnc.training.schedules.Plateau)."""
        sched = self.cfg.lr_schedule
        if sched is None or sched.kind != "reduce_on_plateau":
            return ""
        old = self.opt.lr
        logs["learning_rate"] = float(np.float32(old))
        self.opt.lr = self.state.lr = self.state.plateau.on_epoch_end(sched, logs[sched.monitor], old)
        if self.opt.lr != old:
            return f" - learning rate reduced to {self.opt.lr:.4g}"
        return ""

    def _early_stopping(self, epoch: int, logs: dict) -> str:
        """keras.callbacks.EarlyStopping: stop once `patience` epochs in a row did not improve the
        monitored value by more than min_delta (mode "auto": max for accuracy, auc, precision, recall and
        top_k_accuracy, min for the loss, mae and mse)."""
        es = self.cfg.early_stopping
        if es is None:
            return ""
        s = self.state
        current = logs[es.monitor]
        better = (lambda a, b: a - es.min_delta > b) if maximized(es.monitor) else (lambda a, b: a + es.min_delta < b)
        s.wait += 1
        if s.best is None or better(current, s.best):
            s.best, s.best_epoch, s.wait = current, epoch, 0
            if es.restore_best_weights:
                self.best_weights = {k: np.array(v, copy=True) for k, v in self.net.weights.items()}
            return ""
        if s.wait >= es.patience and epoch > 0:
            s.stopped_epoch = epoch
            return f" - early stopping: {es.monitor} did not improve for {s.wait} epoch(s)"
        return ""


@contextlib.contextmanager
def _deferred_interrupt():
    """Hold a Ctrl-C (SIGINT) or a SIGTERM that arrives while a checkpoint is written until it is
    complete; then act on it as its own handler would (a KeyboardInterrupt for Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        handler = previous[caught[0]]
        if callable(handler) and handler is not signal.default_int_handler:
            handler(caught[0], None)  # nnc's SIGTERM handler raises KeyboardInterrupt itself
        elif caught[0] == signal.SIGTERM and handler == signal.SIG_DFL:
            signal.raise_signal(signal.SIGTERM)  # as if it had come after the checkpoint
        elif handler != signal.SIG_IGN:
            raise KeyboardInterrupt


_META_KEYS = ("version", "epoch", "iterations", "history", "best", "best_epoch", "wait", "stopped_epoch", "config",
              "spec_source", "spec_path", "spec_sha256", "data", "data_sha256")


def read_state(out: str) -> tuple[dict[str, np.ndarray], dict]:
    from nnc.lang.npz import read_npz

    path = os.path.join(out, STATE)
    if not os.path.exists(path):
        raise UserError(f"cannot resume from {out}: it holds no {STATE} (no epoch of a run finished there)")
    try:
        arrays = read_npz(path, "run state")
    except UserError as e:
        raise UserError(f"cannot resume from {out}: {e.message}", exit_code=1) from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
        missing = [k for k in _META_KEYS if k not in meta] if isinstance(meta, dict) else ["all"]
    except (ValueError, KeyError) as e:
        raise UserError(f"cannot resume from {out}: {STATE} is not a checkpoint of nnc train ({e})", exit_code=1) from None
    if missing:
        raise UserError(f"cannot resume from {out}: {STATE} lacks {', '.join(missing)} in its metadata "
                        "(it is not a checkpoint of this nnc, or it was edited)", exit_code=1)
    types = {"epoch": int, "iterations": int, "history": dict, "wait": int, "best_epoch": int, "config": dict,
             "spec_source": str, "spec_path": str, "spec_sha256": str, "data": str, "data_sha256": str}
    wrong = [k for k, t in types.items() if not isinstance(meta[k], t) or isinstance(meta[k], bool)]
    if not wrong:
        try:
            config_from_json(meta["config"])
        except (TypeError, ValueError, KeyError, AttributeError):
            wrong = ["config"]
    if wrong:
        raise UserError(f"cannot resume from {out}: {STATE} has a broken '{wrong[0]}' in its metadata "
                        "(it is not a checkpoint of this nnc, or it was edited)", exit_code=1)
    if meta.get("version") != STATE_VERSION:
        raise UserError(f"cannot resume from {out}: {STATE} has version {meta.get('version')}, "
                        f"this nnc writes {STATE_VERSION}")
    return arrays, meta


# --- curves ------------------------------------------------------------------------------------


def curve_panels(history: dict) -> list[str]:
    """The quantities plot_curves draws, one panel each: the loss, then every metric the history
    holds (accuracy, mae, auc, ...), in the history's order; each panel also shows val_<name>."""
    names = [k for k, v in history.items() if isinstance(v, list) and not k.startswith("val_")]
    return sorted(names, key=lambda k: k != "loss")


def plot_curves(history: dict, path: str, title: str = "") -> None:
    """The loss and every metric per epoch, training and validation, as a PNG (written
    atomically): one panel each, three to a row."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = curve_panels(history)
    cols = min(3, max(1, len(panels)))
    rows = -(-len(panels) // cols) or 1
    fig = Figure(figsize=(5 * cols, 3.6 * rows))
    for i, metric in enumerate(panels, start=1):
        ax = fig.add_subplot(rows, cols, i)
        for key, label, style in ((metric, "training", "-o"), (f"val_{metric}", "validation", "--s")):
            if key in history:
                ys = history[key]
                ax.plot(range(1, len(ys) + 1), ys, style, label=label, markersize=3)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if f"val_{metric}" in history:  # a lone line needs no legend (learning_rate has none)
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=100)
