"""nnc.optim's optimizers on torch tensors: Keras 3's update rules, step for step, in place.

The same classes as nnc.optim, each `_update` a transcription of its NumPy twin (read
nnc.optim's docstring for the rules: the step's lr from a step schedule, gradient clipping,
decoupled weight decay, the optimizer's update, iterations += 1), and the same checkpoint
state: `state_arrays()` gives `SLOT/WEIGHT` numpy arrays (and `scalar/NAME`) in the same names
and layouts, so that a run checkpointed by one engine resumes in the other. Nothing here syncs
with the device (clipping scales are computed on it).

    opt = make_optimizer(cfg, schedule, device)
    opt.step(params, grads)         # {name: tensor}: updated in place, under torch.no_grad
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..model import OptimizerConfig
from ..schedules import step_learning_rate


class Optimizer:
    slots: tuple[str, ...] = ()

    def __init__(self, cfg: OptimizerConfig, schedule=None, device="cpu"):
        self.cfg = cfg
        self.lr = float(cfg.lr)  # the initial lr of a step schedule; ReduceLROnPlateau lowers it
        self.schedule = schedule
        self.device = torch.device(device)
        self.weight_decay = float(cfg.weight_decay or 0.0)
        self.iterations = 0
        self.state: dict[str, dict[str, torch.Tensor]] = {s: {} for s in self.slots}
        self.scalars: dict[str, float] = {}

    @property
    def learning_rate(self) -> float:
        return step_learning_rate(self.schedule, self.lr, self.iterations)

    def _slot(self, slot: str, name: str, like: torch.Tensor) -> torch.Tensor:
        table = self.state[slot]
        if name not in table:
            table[name] = torch.zeros_like(like)
        return table[name]

    def clip(self, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keras's _clip_gradients: clipnorm (per weight), else global_clipnorm, else clipvalue;
        norms in float64, as nnc.optim's."""
        c = self.cfg
        clipnorm = getattr(c, "clipnorm", None)
        global_clipnorm = getattr(c, "global_clipnorm", None)
        clipvalue = getattr(c, "clipvalue", None)
        if clipnorm:
            out = {}
            for name, g in grads.items():
                norm = g.double().square().sum().sqrt()
                scale = torch.where(norm > clipnorm, clipnorm / norm, torch.ones_like(norm))
                out[name] = g * scale.to(g.dtype)
            return out
        if global_clipnorm:
            norm = torch.stack([g.double().square().sum() for g in grads.values()]).sum().sqrt()
            scale = torch.where(norm > global_clipnorm, global_clipnorm / norm, torch.ones_like(norm))
            scale = torch.where(torch.isfinite(norm), scale, torch.full_like(norm, math.nan))
            return {k: g * scale.to(g.dtype) for k, g in grads.items()}
        if clipvalue:
            return {k: g.clamp(-clipvalue, clipvalue) for k, g in grads.items()}
        return grads

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
        self._lr = lr = self.learning_rate
        grads = self.clip({name: g.to(params[name].dtype) for name, g in grads.items()})
        self._begin_step()
        for name, g in grads.items():
            w = params[name]
            if self.weight_decay:
                w.sub_(w * (lr * self.weight_decay))
            self._update(name, w, g)
        self.iterations += 1

    def _begin_step(self) -> None:
        """Per-step work shared by all weights (Adam's bias correction)."""

    def _update(self, name: str, w: torch.Tensor, g: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    # --- checkpoints: nnc.optim's names and layouts ------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"{slot}/{name}": t.detach().cpu().numpy().copy()
                  for slot, table in self.state.items() for name, t in table.items()}
        arrays.update({f"scalar/{k}": np.array(v, dtype=np.float64) for k, v in self.scalars.items()})
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray], iterations: int, dtype=None) -> None:
        self.state = {s: {} for s in self.slots}
        self.scalars = {}
        for key, a in arrays.items():
            slot, name = key.split("/", 1)
            if slot == "scalar":
                self.scalars[name] = float(a)
            else:
                t = torch.as_tensor(np.array(a), device=self.device)
                self.state.setdefault(slot, {})[name] = t if dtype is None else t.to(dtype)
        self.iterations = int(iterations)


class SGD(Optimizer):
    def __init__(self, cfg, schedule=None, device="cpu"):
        super().__init__(cfg, schedule, device)
        self.momentum = float(cfg.momentum)
        self.nesterov = bool(cfg.nesterov)
        self.slots = ("momentum",) if self.momentum else ()
        self.state = {s: {} for s in self.slots}

    def _update(self, name, w, g):
        lr = self._lr
        if not self.momentum:
            w.sub_(g * lr)
            return
        v = self._slot("momentum", name, w)
        v.mul_(self.momentum).sub_(g * lr)
        if self.nesterov:
            w.add_(v * self.momentum - g * lr)
        else:
            w.add_(v)


class RMSprop(Optimizer):
    def __init__(self, cfg, schedule=None, device="cpu"):
        super().__init__(cfg, schedule, device)
        self.rho = float(cfg.rho)
        self.momentum = float(cfg.momentum)
        self.epsilon = float(cfg.epsilon)
        self.slots = ("velocity", "momentum") if self.momentum else ("velocity",)
        self.state = {s: {} for s in self.slots}

    def _update(self, name, w, g):
        s = self._slot("velocity", name, w)
        s.mul_(self.rho).add_(g.square() * (1 - self.rho))
        increment = g * self._lr / torch.sqrt(s + self.epsilon)  # Keras: epsilon inside the root
        if self.momentum:
            m = self._slot("momentum", name, w)
            m.mul_(self.momentum).add_(increment)
            w.sub_(m)
        else:
            w.sub_(increment)


class Adam(Optimizer):
    slots = ("m", "v")

    def __init__(self, cfg, schedule=None, device="cpu"):
        super().__init__(cfg, schedule, device)
        self.beta_1 = float(cfg.beta_1)
        self.beta_2 = float(cfg.beta_2)
        self.epsilon = float(cfg.epsilon)

    def _begin_step(self):
        t = self.iterations + 1
        self._alpha = self._lr * math.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)

    def _update(self, name, w, g):
        m = self._slot("m", name, w)
        v = self._slot("v", name, w)
        m.add_((g - m) * (1 - self.beta_1))
        v.add_((g.square() - v) * (1 - self.beta_2))
        w.sub_(m * self._alpha / (v.sqrt() + self.epsilon))  # Keras: epsilon outside, not bias-corrected


class AdamW(Adam):
    """Adam with its own weight_decay default (the base class's decoupled decay), as nnc.optim's."""


class Nadam(Optimizer):
    slots = ("momentum", "velocity")

    def __init__(self, cfg, schedule=None, device="cpu"):
        super().__init__(cfg, schedule, device)
        self.beta_1 = float(cfg.beta_1)
        self.beta_2 = float(cfg.beta_2)
        self.epsilon = float(cfg.epsilon)
        self.scalars = {"u_product": 1.0}

    def _u(self, t: int) -> float:
        return self.beta_1 * (1.0 - 0.5 * 0.96**t)

    def _begin_step(self):
        t = self.iterations + 1
        u_t, u_next = self._u(t), self._u(t + 1)
        u_product = self.scalars.get("u_product", 1.0) * u_t
        self.scalars["u_product"] = u_product
        self._c_m = u_next / (1.0 - u_product * u_next)
        self._c_g = (1.0 - u_t) / (1.0 - u_product)
        self._v_scale = 1.0 / (1.0 - self.beta_2**t)

    def _update(self, name, w, g):
        m = self._slot("momentum", name, w)
        v = self._slot("velocity", name, w)
        m.add_((g - m) * (1 - self.beta_1))
        v.add_((g.square() - v) * (1 - self.beta_2))
        m_hat = m * self._c_m + g * self._c_g
        w.sub_(m_hat * self._lr / (torch.sqrt(v * self._v_scale) + self.epsilon))


class Adagrad(Optimizer):
    slots = ("accumulator",)

    def __init__(self, cfg, schedule=None, device="cpu"):
        super().__init__(cfg, schedule, device)
        self.initial_accumulator_value = float(getattr(cfg, "initial_accumulator_value", 0.1))
        self.epsilon = float(cfg.epsilon)

    def _update(self, name, w, g):
        a = self.state["accumulator"].get(name)
        if a is None:
            a = self.state["accumulator"][name] = torch.full_like(w, self.initial_accumulator_value)
        a.add_(g.square())
        w.sub_(g * self._lr / torch.sqrt(a + self.epsilon))


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW, "nadam": Nadam, "adagrad": Adagrad}
"""One class per optimizer of nnc.optim.OPTIMIZERS (tests/torch_engine checks they match)."""


def make_optimizer(cfg: OptimizerConfig, schedule=None, device="cpu") -> Optimizer:
    return OPTIMIZERS[cfg.name](cfg, schedule, device)
