"""Optimizers with Keras 3's update rules and defaults
(keras/src/optimizers/{base_optimizer,sgd,rmsprop,adam,adamw,nadam,adagrad}.py).

One step (`Optimizer.step`, Keras's BaseOptimizer.apply) does, in this order:

1. the learning rate of the step: lr = schedule(iterations) with a step schedule (nnc.training.schedules;
   `iterations` counts the steps applied before this one, as Keras's optimizer.iterations), else
   the current lr (which ReduceLROnPlateau lowers between epochs);
2. gradient clipping (at most one of the three, Keras's _clip_gradients):
       clipnorm         each weight's gradient on its own: g <- g * clipnorm / max(||g||_2, clipnorm)
       global_clipnorm  all gradients together: g <- g * clipnorm / max(||all g||_2, clipnorm)
                        (NaN everywhere when that norm is not finite, as Keras)
       clipvalue        elementwise: g <- clip(g, -clipvalue, clipvalue)
3. decoupled weight decay on every weight that has a gradient (Keras excludes none by default):
       w <- w - lr * weight_decay * w
4. the optimizer's own update from the (clipped) gradient g, with the same lr;
5. iterations += 1.

With SGD and momentum this is the lecture's rule

    w <- w - eta dE/dw + alpha (previous step) - lambda eta w

where the previous step is the velocity v (the momentum-carried part of the last step):

    SGD      v <- momentum v - lr g;   w <- w + v          (nesterov: w <- w + momentum v - lr g)
    RMSprop  s <- rho s + (1 - rho) g^2;   w <- w - lr g / sqrt(s + epsilon)
             (with momentum: m <- momentum m + lr g / sqrt(s + epsilon);  w <- w - m)
    Adam     m <- m + (1 - beta_1)(g - m);   v <- v + (1 - beta_2)(g^2 - v)
             w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)
             (amsgrad: a third slot v_hat, from zeros: v_hat <- max(v_hat, v), and the update
             divides by sqrt(v_hat) + epsilon in place of sqrt(v) + epsilon)
    AdamW    Adam with weight_decay=0.004 by default (Keras 3's AdamW is exactly that, amsgrad too)
    Nadam    u_t = beta_1 (1 - 0.5 * 0.96^t);  u_product <- u_product * u_t  (a scalar state,
             checkpointed: the product of u_1..u_t)
             m <- m + (1 - beta_1)(g - m);   v <- v + (1 - beta_2)(g^2 - v)
             m_hat = u_{t+1} m / (1 - u_product * u_{t+1}) + (1 - u_t) g / (1 - u_product)
             v_hat = v / (1 - beta_2^t)
             w <- w - lr m_hat / (sqrt(v_hat) + epsilon)
    Adagrad  a <- a + g^2   (a starts at initial_accumulator_value=0.1);
             w <- w - lr g / sqrt(a + epsilon)

(t = iterations + 1, the number of this step.)

Note where epsilon sits: inside the square root for RMSprop, outside it (and not bias-corrected)
for Adam, both as Keras writes them; PyTorch puts it outside the root for both and
bias-corrects Adam's, so the two agree exactly only with epsilon = 0.

    opt = make_optimizer(cfg, schedule)   # cfg: nnc.lang.model.OptimizerConfig; schedule: LRSchedule | None
    opt.step(weights, grads)              # updates the arrays of `weights` in place
    arrays = opt.state_arrays()           # for a checkpoint; opt.load_state(arrays, iterations)
"""

from __future__ import annotations

import math

import numpy as np

from nnc.lang.model import LRSchedule, OptimizerConfig
from nnc.training.schedules import step_learning_rate


class Optimizer:
    slots: tuple[str, ...] = ()

    def __init__(self, cfg: OptimizerConfig, schedule: LRSchedule | None = None):
        self.cfg = cfg
        self.lr = float(cfg.lr)  # the initial lr of a step schedule; ReduceLROnPlateau lowers it
        self.schedule = schedule
        self.weight_decay = float(cfg.weight_decay or 0.0)
        self.iterations = 0  # updates applied so far (Keras's optimizer.iterations)
        self.state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slots}
        self.scalars: dict[str, float] = {}  # state that is one number (nadam's u_product)

    @property
    def learning_rate(self) -> float:
        """The lr of the next step (Keras's optimizer.learning_rate): a step schedule's value at
        `iterations`, else the current lr."""
        return step_learning_rate(self.schedule, self.lr, self.iterations)

    _zeros_like = staticmethod(np.zeros_like)  # a slot's first value (the torch engine's: torch.zeros_like)

    def _slot(self, slot: str, name: str, like: np.ndarray) -> np.ndarray:
        table = self.state[slot]
        if name not in table:
            table[name] = self._zeros_like(like)
        return table[name]

    def clip(self, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Keras's _clip_gradients: clipnorm (per weight), else global_clipnorm, else clipvalue."""
        c = self.cfg
        if c.clipnorm:
            out = {}
            for name, g in grads.items():
                norm = math.sqrt(float(np.square(g, dtype=np.float64).sum()))
                out[name] = g * g.dtype.type(c.clipnorm / norm) if norm > c.clipnorm else g
            return out
        if c.global_clipnorm:
            norm = math.sqrt(sum(float(np.square(g, dtype=np.float64).sum()) for g in grads.values()))
            scale = c.global_clipnorm / norm if norm > c.global_clipnorm else 1.0
            if not math.isfinite(norm):
                scale = math.nan
            return grads if scale == 1.0 else {k: g * g.dtype.type(scale) for k, g in grads.items()}
        if c.clipvalue:
            return {k: np.clip(g, -c.clipvalue, c.clipvalue) for k, g in grads.items()}
        return grads

    def step(self, weights: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self._lr = lr = self.learning_rate
        grads = self.clip({name: np.asarray(g, dtype=weights[name].dtype) for name, g in grads.items()})
        self._begin_step()
        for name, g in grads.items():
            w = weights[name]
            if self.weight_decay:
                w -= (lr * self.weight_decay) * w
            self._update(name, w, g)
        self.iterations += 1

    def _begin_step(self) -> None:
        """Per-step work shared by all weights, before any is updated (Adam's bias correction)."""

    def _update(self, name: str, w: np.ndarray, g: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    # --- checkpoints ---------------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """`SLOT/WEIGHT` -> array, e.g. `momentum/dense_1.kernel`; one-number state as
        `scalar/NAME` (nadam's `scalar/u_product`)."""
        arrays = {f"{slot}/{name}": a for slot, table in self.state.items() for name, a in table.items()}
        arrays.update({f"scalar/{k}": np.array(v, dtype=np.float64) for k, v in self.scalars.items()})
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray], iterations: int) -> None:
        self.state = {s: {} for s in self.slots}
        self.scalars = {}
        for key, a in arrays.items():
            slot, name = key.split("/", 1)
            if slot == "scalar":
                self.scalars[name] = float(a)
            else:
                self.state[slot][name] = np.array(a)
        self.iterations = int(iterations)


class SGD(Optimizer):
    def __init__(self, cfg: OptimizerConfig, schedule: LRSchedule | None = None):
        super().__init__(cfg, schedule)
        self.momentum = float(cfg.momentum)
        self.nesterov = bool(cfg.nesterov)
        self.slots = ("momentum",) if self.momentum else ()
        self.state = {s: {} for s in self.slots}

    def _update(self, name, w, g):
        lr = self._lr
        if not self.momentum:
            w -= lr * g
            return
        v = self._slot("momentum", name, w)
        v *= self.momentum
        v -= lr * g
        if self.nesterov:
            w += self.momentum * v - lr * g
        else:
            w += v


class RMSprop(Optimizer):
    def __init__(self, cfg: OptimizerConfig, schedule: LRSchedule | None = None):
        super().__init__(cfg, schedule)
        self.rho = float(cfg.rho)
        self.momentum = float(cfg.momentum)
        self.epsilon = float(cfg.epsilon)
        self.slots = ("velocity", "momentum") if self.momentum else ("velocity",)
        self.state = {s: {} for s in self.slots}

    def _update(self, name, w, g):
        s = self._slot("velocity", name, w)
        s *= self.rho
        s += (1 - self.rho) * np.square(g)
        increment = self._lr * g / np.sqrt(s + self.epsilon)
        if self.momentum:
            m = self._slot("momentum", name, w)
            m *= self.momentum
            m += increment
            w -= m
        else:
            w -= increment


class Adam(Optimizer):
    slots = ("m", "v")

    def __init__(self, cfg: OptimizerConfig, schedule: LRSchedule | None = None):
        super().__init__(cfg, schedule)
        self.beta_1 = float(cfg.beta_1)
        self.beta_2 = float(cfg.beta_2)
        self.epsilon = float(cfg.epsilon)
        self.amsgrad = bool(cfg.amsgrad)
        if self.amsgrad:  # Keras's velocity_hats, checkpointed as `v_hat/WEIGHT`
            self.slots = ("m", "v", "v_hat")
            self.state = {s: {} for s in self.slots}

    def _begin_step(self):
        t = self.iterations + 1
        self._alpha = self._lr * math.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)

    def _update(self, name, w, g):
        m = self._slot("m", name, w)
        v = self._slot("v", name, w)
        m += (1 - self.beta_1) * (g - m)
        v += (1 - self.beta_2) * (np.square(g) - v)
        if self.amsgrad:  # Keras's velocity_hats: the running maximum of v
            v_hat = self._slot("v_hat", name, w)
            np.maximum(v_hat, v, out=v_hat)
            v = v_hat
        w -= self._alpha * m / (np.sqrt(v) + self.epsilon)


class AdamW(Adam):
    """Keras 3's AdamW: Adam whose weight_decay defaults to 0.004 (the default lives in the
    checker's OPTIMIZERS table; the update is Adam's, after the base class's decoupled decay)."""


class Nadam(Optimizer):
    slots = ("momentum", "velocity")

    def __init__(self, cfg: OptimizerConfig, schedule: LRSchedule | None = None):
        super().__init__(cfg, schedule)
        self.beta_1 = float(cfg.beta_1)
        self.beta_2 = float(cfg.beta_2)
        self.epsilon = float(cfg.epsilon)
        self.scalars = {"u_product": 1.0}

    def _u(self, t: int) -> float:
        return self.beta_1 * (1.0 - 0.5 * 0.96**t)

    def _begin_step(self):
        t = self.iterations + 1
        u_t, u_next = self._u(t), self._u(t + 1)
        u_product = self.scalars.get("u_product", 1.0) * u_t  # the product of u_1..u_t
        self.scalars["u_product"] = u_product
        # m_hat = c_m m + c_g g;  v_hat = v / (1 - beta_2^t)
        self._c_m = u_next / (1.0 - u_product * u_next)
        self._c_g = (1.0 - u_t) / (1.0 - u_product)
        self._v_scale = 1.0 / (1.0 - self.beta_2**t)

    def _update(self, name, w, g):
        m = self._slot("momentum", name, w)
        v = self._slot("velocity", name, w)
        m += (1 - self.beta_1) * (g - m)
        v += (1 - self.beta_2) * (np.square(g) - v)
        m_hat = self._c_m * m + self._c_g * g
        w -= self._lr * m_hat / (np.sqrt(v * self._v_scale) + self.epsilon)


class Adagrad(Optimizer):
    slots = ("accumulator",)

    def __init__(self, cfg: OptimizerConfig, schedule: LRSchedule | None = None):
        super().__init__(cfg, schedule)
        self.initial_accumulator_value = float(cfg.initial_accumulator_value)
        self.epsilon = float(cfg.epsilon)

    def _update(self, name, w, g):
        a = self.state["accumulator"].get(name)
        if a is None:
            a = self.state["accumulator"][name] = np.full_like(w, self.initial_accumulator_value)
        a += np.square(g)
        w -= self._lr * g / np.sqrt(a + self.epsilon)


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW, "nadam": Nadam, "adagrad": Adagrad}


def make_optimizer(cfg: OptimizerConfig, schedule: LRSchedule | None = None) -> Optimizer:
    return OPTIMIZERS[cfg.name](cfg, schedule)
