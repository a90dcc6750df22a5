"""The NumPy engine: what the shared training loop (nnc.training.loop.Trainer) asks of an engine,
computed with nnc.engines.numpy.Network and nnc.training.optim. nnc.engines.torch.TorchEngine offers the same.

    engine = NumpyEngine(model, weights, cfg)   # cfg: nnc.lang.model.TrainConfig
    value, z = engine.train_step(xb, yb, rng)   # one optimizer step; the loss (penalty included), z
    z = engine.logits(x, batch_size)            # inference, before engine.final_activation
    engine.weights                              # {name: array}: the current weights, Keras layouts
    engine.load_weights(arrays)                 # replace them (resume, best weights)
    engine.opt                                  # .lr, .iterations, .state_arrays(), .load_state(...)

A step: the forward pass in training mode (dropout masks drawn from `rng`), the loss of
nnc.training.losses.loss_and_grad (class weights and the loss's options from cfg), plus the l1/l2 penalty
of nnc.training.losses.regularization on this step's weights, backward, the optimizer's step. A loss that
is not finite is returned without a step: the loop stops on it.
"""

from __future__ import annotations

import math

import numpy as np

from nnc.engines.numpy.network import Network
from nnc.training.losses import class_sample_weights, loss_and_grad
from nnc.training.losses import loss_options, regularization
from nnc.training.optim import make_optimizer


class NumpyEngine:
    name = "numpy"

    def __init__(self, model, weights: dict[str, np.ndarray], cfg):
        self.model, self.cfg = model, cfg
        self.net = Network(model, weights)
        self.final_activation = self.net.final_activation
        self.opt = make_optimizer(cfg.optimizer, cfg.lr_schedule)
        self.options = loss_options(cfg)

    @property
    def weights(self) -> dict[str, np.ndarray]:
        return self.net.weights

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        for k in self.net.weights:
            self.net.weights[k] = np.array(weights[k], dtype=self.net.weights[k].dtype)

    def train_step(self, xb, yb, rng) -> tuple[float, np.ndarray]:
        net, cfg = self.net, self.cfg
        z = net.forward(xb, training=True, rng=rng)
        sample_weight = class_sample_weights(yb, cfg.class_weight) if cfg.class_weight else None
        value, dz = loss_and_grad(cfg.loss, z, yb, net.final_activation, sample_weight=sample_weight, **self.options)
        penalty, penalty_grads = regularization(self.model, net.weights)  # the weights of this step
        value += penalty
        if not math.isfinite(value):
            return value, z
        grads = net.backward(dz)
        for name, g in penalty_grads.items():
            grads[name] = grads[name] + g
        self.opt.step(net.weights, grads)
        return value, z

    def logits(self, x, batch_size: int = 1024) -> np.ndarray:
        return self.net.logits(x, batch_size)
