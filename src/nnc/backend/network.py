"""A checked model run with the NumPy kernels: forward, backward, predict.

    net = Network(model, weights)          # weights: {"LAYER.kernel": array, ...} in Keras layouts
    z = net.forward(x, training=True, rng=rng)   # output before net.final_activation
    grads = net.backward(dz)               # {"LAYER.kernel": dL/dw, ...}, same keys as net.weights
    y = net.predict(x)                     # Keras's outputs, final softmax/sigmoid included

A dense or conv layer's activation option runs as a step of its own after the layer. When the
model ends in softmax or sigmoid (as an option or as an activation layer), forward() leaves it
out and names it in `final_activation`, so a loss can fuse it (log-softmax, logits) stably.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..kinds import layer_activation
from .kernels import KERNELS, Activation


@dataclass
class Step:
    layer: str  # the layer's name, the prefix of its weights
    kind: str
    kernel: object
    weight_names: tuple[str, ...]  # short names: kernel, recurrent_kernel, bias, embeddings


class Network:
    def __init__(self, model, weights: dict[str, np.ndarray], dtype=None):
        self.model = model
        self.weights = weights
        missing = [k for k in model.weight_shapes() if k not in weights]
        if missing:
            raise UserError(f"weights for {model.name} lack {', '.join(repr(m) for m in missing[:5])}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        if dtype is None:
            dtypes = {np.asarray(w).dtype for w in weights.values()}
            dtype = dtypes.pop() if len(dtypes) == 1 else np.float32
        self.dtype = np.dtype(dtype)
        steps: list[Step] = []
        for layer in model.layers:
            steps.append(Step(layer.name, layer.kind, KERNELS[layer.kind](layer), tuple(layer.weights)))
            if layer.kind in ("dense", "conv1d", "conv2d"):
                act = layer_activation(layer.kind, layer.options)
                if act != "linear":
                    steps.append(Step(layer.name, act, Activation(name=act), ()))
        self.final_activation: str | None = None
        if steps and isinstance(steps[-1].kernel, Activation) and steps[-1].kernel.name in ("softmax", "sigmoid"):
            self.final_activation = steps[-1].kernel.name
            steps = steps[:-1]
        # relu then maxpool == maxpool then relu, exactly (relu is monotone and exact in floats),
        # and so are the gradients (ties the swap could break are where relu's slope is 0 anyway):
        # pooling first makes the relu act on a quarter of the values
        for i in range(len(steps) - 1):
            if (isinstance(steps[i].kernel, Activation) and steps[i].kernel.name == "relu"
                    and steps[i + 1].kind in ("maxpool1d", "maxpool2d")):
                steps[i], steps[i + 1] = steps[i + 1], steps[i]
        self.steps = steps
        self._caches: list | None = None
        self.input_grad: np.ndarray | None = None

    # --- running -----------------------------------------------------------------------------

    def _layer_weights(self, step: Step) -> dict[str, np.ndarray]:
        return {n: self.weights[f"{step.layer}.{n}"] for n in step.weight_names}

    def _prepare(self, x) -> np.ndarray:
        x = np.asarray(x)
        want = tuple(self.model.input.shape)
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise UserError(f"input of {self.model.name} has shape {list(x.shape)}, but the spec's input "
                            f"'{self.model.input.name}' needs [batch, {', '.join(map(str, want))}]")
        if self.model.input.dtype == "int64":
            return x if np.issubdtype(x.dtype, np.integer) else x.astype(np.int64)
        return x.astype(self.dtype, copy=False)

    def forward(self, x, training: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
        """The model's output before `final_activation`; keeps what backward() needs."""
        h = self._prepare(x)
        caches = []
        for step in self.steps:
            h, cache = step.kernel.forward(h, self._layer_weights(step), training, rng)
            caches.append(cache)
        self._caches = caches
        return h

    def backward(self, dz: np.ndarray, need_input_grad: bool = False) -> dict[str, np.ndarray]:
        """dL/dw for every weight, from dL/dz (z = the last forward's output). With
        need_input_grad, dL/dx is left in `input_grad` (None when the model starts with an embedding)."""
        if self._caches is None:
            raise RuntimeError("backward() needs a forward() first")
        grads: dict[str, np.ndarray] = {}
        d = np.asarray(dz, dtype=self.dtype)
        for k in range(len(self.steps) - 1, -1, -1):
            step = self.steps[k]
            need_dx = k > 0 or need_input_grad
            d, g = step.kernel.backward(d, self._layer_weights(step), self._caches[k], need_dx)
            for n, v in g.items():
                grads[f"{step.layer}.{n}"] = v
        self.input_grad = d if need_input_grad else None
        return {name: grads[name] for name in self.weights if name in grads}

    def apply_final(self, z: np.ndarray) -> np.ndarray:
        if self.final_activation is None:
            return z
        return Activation(name=self.final_activation).forward(z, None)[0]

    def predict(self, x, batch_size: int = 1024) -> np.ndarray:
        """Inference (dropout off), with the final activation: what Keras's model.predict returns."""
        x = self._prepare(x)
        outs = []
        for start in range(0, max(len(x), 1), batch_size):
            h = x[start : start + batch_size]
            for step in self.steps:
                h, _ = step.kernel.forward(h, self._layer_weights(step), False, None)
            outs.append(self.apply_final(h))
        return np.concatenate(outs) if outs else np.zeros((0,) + self.model.output_shape, self.dtype)
