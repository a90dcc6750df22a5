"""Optimizers with Keras 3's update rules and defaults (keras/src/optimizers/{sgd,rmsprop,adam}.py).

Every optimizer first applies Keras 3's decoupled weight decay, w <- w - lr * weight_decay * w,
then its own update from the gradient g. With SGD and momentum this is the lecture's rule

    w <- w - eta dE/dw + alpha (previous step) - lambda eta w

where the previous step is the velocity v (the momentum-carried part of the last step):

    SGD      v <- momentum v - lr g;   w <- w + v          (nesterov: w <- w + momentum v - lr g)
    RMSprop  s <- rho s + (1 - rho) g^2;   w <- w - lr g / sqrt(s + epsilon)
             (with momentum: m <- momentum m + lr g / sqrt(s + epsilon);  w <- w - m)
    Adam     m <- m + (1 - beta_1)(g - m);   v <- v + (1 - beta_2)(g^2 - v)
             w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

Note where epsilon sits: inside the square root for RMSprop, outside it (and not bias-corrected)
for Adam, both as Keras writes them; PyTorch puts it outside the root for both and
bias-corrects Adam's, so the two agree exactly only with epsilon = 0.

    opt = make_optimizer(cfg)             # cfg: nnc.model.OptimizerConfig
    opt.step(weights, grads)              # updates the arrays of `weights` in place
    arrays = opt.state_arrays()           # for a checkpoint; opt.load_state(arrays, iterations)
"""

from __future__ import annotations

import math

import numpy as np

from .model import OptimizerConfig


class Optimizer:
    slots: tuple[str, ...] = ()

    def __init__(self, cfg: OptimizerConfig):
        self.cfg = cfg
        self.lr = float(cfg.lr)
        self.weight_decay = float(cfg.weight_decay or 0.0)
        self.iterations = 0  # updates applied so far (Keras's optimizer.iterations)
        self.state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slots}

    def _slot(self, slot: str, name: str, like: np.ndarray) -> np.ndarray:
        table = self.state[slot]
        if name not in table:
            table[name] = np.zeros_like(like)
        return table[name]

    def step(self, weights: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        for name, g in grads.items():
            w = weights[name]
            g = np.asarray(g, dtype=w.dtype)
            if self.weight_decay:
                w -= (self.lr * self.weight_decay) * w
            self._update(name, w, g)
        self.iterations += 1

    def _update(self, name: str, w: np.ndarray, g: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    # --- checkpoints ---------------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """`SLOT/WEIGHT` -> array, e.g. `momentum/dense_1.kernel`."""
        return {f"{slot}/{name}": a for slot, table in self.state.items() for name, a in table.items()}

    def load_state(self, arrays: dict[str, np.ndarray], iterations: int) -> None:
        self.state = {s: {} for s in self.slots}
        for key, a in arrays.items():
            slot, name = key.split("/", 1)
            self.state[slot][name] = np.array(a)
        self.iterations = int(iterations)


class SGD(Optimizer):
    def __init__(self, cfg: OptimizerConfig):
        super().__init__(cfg)
        self.momentum = float(cfg.momentum)
        self.nesterov = bool(cfg.nesterov)
        self.slots = ("momentum",) if self.momentum else ()
        self.state = {s: {} for s in self.slots}

    def _update(self, name, w, g):
        if not self.momentum:
            w -= self.lr * g
            return
        v = self._slot("momentum", name, w)
        v *= self.momentum
        v -= self.lr * g
        if self.nesterov:
            w += self.momentum * v - self.lr * g
        else:
            w += v


class RMSprop(Optimizer):
    def __init__(self, cfg: OptimizerConfig):
        super().__init__(cfg)
        self.rho = float(cfg.rho)
        self.momentum = float(cfg.momentum)
        self.epsilon = float(cfg.epsilon)
        self.slots = ("velocity", "momentum") if self.momentum else ("velocity",)
        self.state = {s: {} for s in self.slots}

    def _update(self, name, w, g):
        s = self._slot("velocity", name, w)
        s *= self.rho
        s += (1 - self.rho) * np.square(g)
        increment = self.lr * g / np.sqrt(s + self.epsilon)
        if self.momentum:
            m = self._slot("momentum", name, w)
            m *= self.momentum
            m += increment
            w -= m
        else:
            w -= increment


class Adam(Optimizer):
    slots = ("m", "v")

    def __init__(self, cfg: OptimizerConfig):
        super().__init__(cfg)
        self.beta_1 = float(cfg.beta_1)
        self.beta_2 = float(cfg.beta_2)
        self.epsilon = float(cfg.epsilon)

    def step(self, weights, grads):
        t = self.iterations + 1
        self._alpha = self.lr * math.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)
        super().step(weights, grads)

    def _update(self, name, w, g):
        m = self._slot("m", name, w)
        v = self._slot("v", name, w)
        m += (1 - self.beta_1) * (g - m)
        v += (1 - self.beta_2) * (np.square(g) - v)
        w -= self._alpha * m / (np.sqrt(v) + self.epsilon)


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}


def make_optimizer(cfg: OptimizerConfig) -> Optimizer:
    return OPTIMIZERS[cfg.name](cfg)
