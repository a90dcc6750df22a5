"""nnc.training.optim's optimizers on torch tensors: Keras 3's update rules, step for step, in place.

Each class is its NumPy twin (it inherits the configuration, the step's learning rate and the
per-step scalars such as Adam's bias correction and Nadam's momentum schedule) with the tensor
parts written for torch: slots, clipping, the in-place update (`_update`, a transcription of the
twin's) (read
nnc.training.optim's docstring for the rules: the step's lr from a step schedule, gradient clipping,
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

from nnc.lang.model import OptimizerConfig
from nnc.training import optim as np_optim


class Optimizer(np_optim.Optimizer):
    """nnc.training.optim.Optimizer with its slots as tensors on `device`."""

    def __init__(self, cfg: OptimizerConfig, schedule=None, device="cpu"):
        self.device = torch.device(device)
        super().__init__(cfg, schedule)

    _zeros_like = staticmethod(torch.zeros_like)  # slots as tensors, on the weight's device

    def clip(self, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keras's _clip_gradients: clipnorm (per weight), else global_clipnorm, else clipvalue;
        norms in float64, as nnc.training.optim's, computed on the device (no sync)."""
        c = self.cfg
        if c.clipnorm:
            out = {}
            for name, g in grads.items():
                norm = g.double().square().sum().sqrt()
                scale = torch.where(norm > c.clipnorm, c.clipnorm / norm, torch.ones_like(norm))
                out[name] = g * scale.to(g.dtype)
            return out
        if c.global_clipnorm:
            norm = torch.stack([g.double().square().sum() for g in grads.values()]).sum().sqrt()
            scale = torch.where(norm > c.global_clipnorm, c.global_clipnorm / norm, torch.ones_like(norm))
            scale = torch.where(torch.isfinite(norm), scale, torch.full_like(norm, math.nan))
            return {k: g * scale.to(g.dtype) for k, g in grads.items()}
        if c.clipvalue:
            return {k: g.clamp(-c.clipvalue, c.clipvalue) for k, g in grads.items()}
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

    # --- checkpoints: nnc.training.optim's names and layouts ------------------------------------------

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


class SGD(Optimizer, np_optim.SGD):
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


class RMSprop(Optimizer, np_optim.RMSprop):
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


class Adam(Optimizer, np_optim.Adam):
    def _update(self, name, w, g):
        m = self._slot("m", name, w)
        v = self._slot("v", name, w)
        m.add_((g - m) * (1 - self.beta_1))
        v.add_((g.square() - v) * (1 - self.beta_2))
        if self.amsgrad:  # Keras's velocity_hats: the running maximum of v
            v_hat = self._slot("v_hat", name, w)
            v = torch.maximum(v_hat, v, out=v_hat)
        w.sub_(m * self._alpha / (v.sqrt() + self.epsilon))  # Keras: epsilon outside, not bias-corrected


class AdamW(Adam):
    """Adam with its own weight_decay default (the base class's decoupled decay), as nnc.training.optim's."""


class Nadam(Optimizer, np_optim.Nadam):
    def _update(self, name, w, g):
        m = self._slot("momentum", name, w)
        v = self._slot("velocity", name, w)
        m.add_((g - m) * (1 - self.beta_1))
        v.add_((g.square() - v) * (1 - self.beta_2))
        m_hat = m * self._c_m + g * self._c_g
        w.sub_(m_hat * self._lr / (torch.sqrt(v * self._v_scale) + self.epsilon))


class Adagrad(Optimizer, np_optim.Adagrad):
    def _update(self, name, w, g):
        a = self.state["accumulator"].get(name)
        if a is None:
            a = self.state["accumulator"][name] = torch.full_like(w, self.initial_accumulator_value)
        a.add_(g.square())
        w.sub_(g * self._lr / torch.sqrt(a + self.epsilon))


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW, "nadam": Nadam, "adagrad": Adagrad}
"""One class per optimizer of nnc.training.optim.OPTIMIZERS (tests/torch_engine checks they match)."""


def make_optimizer(cfg: OptimizerConfig, schedule=None, device="cpu") -> Optimizer:
    return OPTIMIZERS[cfg.name](cfg, schedule, device)
