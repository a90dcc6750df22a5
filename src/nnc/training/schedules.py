"""Learning-rate schedules of the train block's `lr_schedule`, with Keras 3's formulas
(keras/src/optimizers/schedules/learning_rate_schedule.py, keras/src/callbacks/reduce_lr_on_plateau.py).

Step schedules give the learning rate of an optimizer step from `step`, the number of steps
applied before it (Keras's optimizer.iterations), and lr0, the optimizer's `lr=`:

    cosine       (CosineDecay) without warmup: s = min(step, decay_steps)
                     lr = lr0 * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha)
                 with warmup_target=T warmup_steps=W: s = min(step, W + decay_steps);
                     s < W:  lr = lr0 + (T - lr0) * s / W          (linear, from lr0 to T)
                     else:   the cosine above from T over decay_steps, with s - W
    exponential  (ExponentialDecay) lr = lr0 * decay_rate ^ (step / decay_steps)
                 (staircase: the exponent floored)
    piecewise    (PiecewiseConstantDecay) values[0] while step <= boundaries[0],
                 values[i] while boundaries[i-1] < step <= boundaries[i], values[-1] after
                 the last boundary; the values are the learning rates (lr0 is values[0])

`reduce_on_plateau` (keras.callbacks.ReduceLROnPlateau) acts at the end of an epoch instead:
`Plateau.on_epoch_end` below. Warmup is Keras's, on cosine only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nnc.lang.metric_rules import maximized  # Keras's mode='auto': accuracy-like metrics up, losses down
from nnc.lang.model import LRSchedule

STEP_SCHEDULES = ("cosine", "exponential", "piecewise")
SCHEDULES = STEP_SCHEDULES + ("reduce_on_plateau",)


def step_learning_rate(schedule: LRSchedule | None, lr0: float, step: int) -> float:
    """The learning rate of the step after `step` steps (lr0 without a step schedule)."""
    if schedule is None or schedule.kind not in STEP_SCHEDULES:
        return lr0
    s = schedule
    if s.kind == "cosine":
        if s.warmup_target is None:
            return _cosine(min(step, s.decay_steps), s.decay_steps, lr0, s.alpha)
        x = min(step, s.warmup_steps + s.decay_steps)
        if x < s.warmup_steps:
            return (s.warmup_target - lr0) * (x / s.warmup_steps) + lr0
        return _cosine(x - s.warmup_steps, s.decay_steps, s.warmup_target, s.alpha)
    if s.kind == "exponential":
        p = step / s.decay_steps
        if s.staircase:
            p = math.floor(p)
        return lr0 * s.decay_rate**p
    # piecewise
    for boundary, value in zip(s.boundaries, s.values):
        if step <= boundary:
            return float(value)
    return float(s.values[-1])


def _cosine(step: float, decay_steps: int, lr: float, alpha: float) -> float:
    decayed = (1 - alpha) * 0.5 * (1.0 + math.cos(math.pi * (step / decay_steps))) + alpha
    return lr * decayed


@dataclass
class Plateau:
    """keras.callbacks.ReduceLROnPlateau's state and its on_epoch_end: after `patience` epochs
    without an improvement of the monitored value by more than min_delta, lr <- max(lr * factor,
    min_lr) (when lr > min_lr), then `cooldown` epochs during which no epoch counts as waiting.
    The learning rate is held as Keras holds it, a float32 variable. The state lives in the
    Trainer's RunState and is checkpointed, so a resumed run reduces as an uninterrupted one."""

    wait: int = 0
    cooldown_counter: int = 0
    best: float | None = None

    def on_epoch_end(self, cfg: LRSchedule, current: float, lr: float) -> float:
        """The learning rate for the next epoch, given the monitored value of this one."""
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(cfg, current):
            self.best = current
            self.wait = 0
        elif not self.cooldown_counter > 0:
            self.wait += 1
            if self.wait >= cfg.patience:
                old = float(np.float32(lr))  # Keras reads its float32 variable
                if old > float(np.float32(cfg.min_lr)):
                    lr = float(np.float32(max(old * cfg.factor, cfg.min_lr)))
                    self.cooldown_counter = cfg.cooldown
                    self.wait = 0
        return lr

    def _improved(self, cfg: LRSchedule, current: float) -> bool:
        if self.best is None:
            return True
        if maximized(cfg.monitor):
            return current - abs(cfg.min_delta) > self.best
        return current + abs(cfg.min_delta) < self.best
