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
from . import parallel
from .kernels import KERNELS, Activation, Dropout


@dataclass
class Step:
    layer: str  # the layer's name, the prefix of its weights
    kind: str
    kernel: object
    weight_names: tuple[str, ...]  # short names: kernel, recurrent_kernel, bias, embeddings


class Network:
    def __init__(self, model, weights: dict[str, np.ndarray], dtype=None, threads: int | None = None):
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
        # batch chunks run at once, one per core (nnc.backend.parallel); 1 runs the batch whole
        kinds = tuple(layer.kind for layer in model.layers)
        self.threads = parallel.default_threads(kinds) if threads is None else max(1, int(threads))
        steps: list[Step] = []
        for layer in model.layers:
            steps.append(Step(layer.name, layer.kind, KERNELS[layer.kind](layer), tuple(layer.weights)))
            if layer.spec.split_activation:
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
        self._parts: list[slice] = []
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

    def _noise(self, n: int, training: bool, rng) -> dict[int, np.ndarray]:
        """Dropout's uniform draws for the whole batch, in layer order, taken before the batch is
        cut into chunks: the masks, and so the results, do not depend on the number of threads."""
        if not training:
            return {}
        noise = {}
        for k, step in enumerate(self.steps):
            # a kernel that drops units in training says which uniform draws it needs for a batch of n
            # (`draws(n)`: a list of shapes, each starting with n); they are taken here, in step order
            shapes = step.kernel.draws(n) if hasattr(step.kernel, "draws") else []
            if shapes:
                if rng is None:
                    raise ValueError("dropout in training needs an rng (numpy.random.Generator)")
                noise[k] = [rng.random(shape, dtype=self.dtype) for shape in shapes]
        return noise

    def _forward_chunk(self, h, training, noise, part, keep):
        caches = []
        for k, step in enumerate(self.steps):
            draws = _Drawn([a[part] for a in noise[k]]) if k in noise else None
            h, cache = step.kernel.forward(h, self._layer_weights(step), training, draws)
            caches.append(cache if keep else None)
        return h, caches

    def forward(self, x, training: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
        """The model's output before `final_activation`; keeps what backward() needs."""
        h = self._prepare(x)
        noise = self._noise(len(h), training, rng)
        parts = parallel.chunks(len(h), self.threads)
        out = parallel.run(lambda part: self._forward_chunk(h[part], training, noise, part, True), parts)
        self._parts = parts
        self._caches = [caches for _, caches in out]
        return out[0][0] if len(out) == 1 else np.concatenate([z for z, _ in out])

    def _backward_chunk(self, dz, caches, need_input_grad):
        grads: dict[str, np.ndarray] = {}
        d = dz
        for k in range(len(self.steps) - 1, -1, -1):
            step = self.steps[k]
            need_dx = k > 0 or need_input_grad
            d, g = step.kernel.backward(d, self._layer_weights(step), caches[k], need_dx)
            for n, v in g.items():
                grads[f"{step.layer}.{n}"] = v
        return grads, d

    def backward(self, dz: np.ndarray, need_input_grad: bool = False) -> dict[str, np.ndarray]:
        """dL/dw for every weight, from dL/dz (z = the last forward's output). With
        need_input_grad, dL/dx is left in `input_grad` (None when the model starts with an embedding)."""
        if self._caches is None:
            raise RuntimeError("backward() needs a forward() first")
        dz = np.asarray(dz, dtype=self.dtype)
        out = parallel.run(lambda i: self._backward_chunk(dz[self._parts[i]], self._caches[i], need_input_grad),
                           list(range(len(self._parts))))
        grads = out[0][0]
        for g, _ in out[1:]:  # each chunk's dz already carries its share of the batch mean
            for name, v in g.items():
                grads[name] = grads[name] + v
        if need_input_grad and out[0][1] is not None:
            self.input_grad = out[0][1] if len(out) == 1 else np.concatenate([d for _, d in out])
        else:
            self.input_grad = None
        return {name: grads[name] for name in self.weights if name in grads}

    def apply_final(self, z: np.ndarray) -> np.ndarray:
        if self.final_activation is None:
            return z
        return Activation(name=self.final_activation).forward(z, None)[0]

    def logits(self, x, batch_size: int = 1024) -> np.ndarray:
        """Inference (dropout off) before `final_activation`, batch by batch, keeping no caches
        (what evaluation needs: the loss fuses the final activation)."""
        x = self._prepare(x)
        outs = []
        for start in range(0, len(x), batch_size):
            h = x[start : start + batch_size]
            parts = parallel.chunks(len(h), self.threads)
            zs = parallel.run(lambda part: self._forward_chunk(h[part], False, {}, part, False)[0], parts)
            outs.append(zs[0] if len(zs) == 1 else np.concatenate(zs))
        return np.concatenate(outs) if outs else np.zeros((0,) + tuple(self.model.output_shape), self.dtype)

    def predict(self, x, batch_size: int = 1024) -> np.ndarray:
        """Inference (dropout off), with the final activation: what Keras's model.predict returns."""
        return self.apply_final(self.logits(x, batch_size))


class _Drawn:
    """Stands in for a numpy Generator in a kernel's forward: hands out, in order, the draws
    taken beforehand for the shapes its `draws(n)` listed."""

    def __init__(self, values: list[np.ndarray]):
        self.values = list(values)

    def random(self, shape, dtype=None):
        value = self.values.pop(0)
        assert tuple(shape) == value.shape, (shape, value.shape)
        return value
