"""A checked model run with the NumPy kernels: forward, backward, predict.

    net = Network(model, weights)          # weights: {"LAYER.kernel": array, ...} in Keras layouts
    z = net.forward(x, training=True, rng=rng)   # output before net.final_activation
    grads = net.backward(dz)               # {"LAYER.kernel": dL/dw, ...}, same keys as net.weights
    y = net.predict(x)                     # Keras's outputs, final softmax/sigmoid included

A dense or conv layer's activation option runs as a step of its own after the layer. When the
model ends in softmax or sigmoid (as an option or as an activation layer), forward() leaves it
out and names it in `final_activation`, so a loss can fuse it (log-softmax, logits) stably.

A model with blocks (nnc.lang.model.Block, `Model.body`) runs as a tree of stacks: a stack is a list
of Steps (one kernel each) and Joins (a merge block: its branches, each a stack read from the
block's input, and the merge kernel that joins their outputs). `repeat` is its body in sequence,
so it is expanded into the stack that holds it; a chain model is one stack of Steps and runs as
it always did. Backward walks the same tree in reverse: a Join hands each branch its share of
the gradient (nnc.engines.numpy.kernels.MERGE_KERNELS) and sums what the branches return at the block's
input, which every branch read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.engines.numpy import fpenv
from nnc.engines.numpy import parallel
from nnc.engines.numpy.kernels import KERNELS, MERGE_KERNELS, Activation, Dropout
from nnc.engines.numpy.kernels_fused import ConvMaxPool
from nnc.lang.errors import UserError
from nnc.lang.kinds import layer_activation
from nnc.lang.model import Block


@dataclass
class Step:
    layer: str  # the layer's name, the prefix of its weights
    kind: str
    kernel: object
    weight_names: tuple[str, ...]  # short names: kernel, recurrent_kernel, bias, embeddings
    id: int = 0  # its place in the tree, in reading order: its cache slot and its dropout noise key


@dataclass
class Join:
    """A merge block: `branches` (stacks of Steps and Joins, each read from the block's input;
    an empty one is the input itself) joined by `kernel` (MERGE_KERNELS[merge])."""

    block: str  # the block's name
    merge: str  # add, concat, multiply, ... (residual: add)
    kernel: object
    branches: list[list]
    id: int = 0


def _read_only(a):
    """A view of `a` that raises on writes: what a block hands to several branches, so that a
    kernel writing into its input (or its dy) fails loudly instead of corrupting a sibling's."""
    if a is None or not isinstance(a, np.ndarray):
        return a
    v = a.view()
    v.flags.writeable = False
    return v


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
        # batch chunks run at once, one per core (nnc.engines.numpy.parallel); 1 runs the batch whole
        kinds = tuple(layer.kind for layer in model.layers)
        self.threads = parallel.default_threads(kinds) if threads is None else max(1, int(threads))
        if any(k in parallel.WHOLE_BATCH for k in kinds):
            self.threads = 1  # batch statistics (batchnorm) must see the whole batch, not a chunk
        steps = self._stack(model.body if model.body is not None else model.layers)
        self.final_activation: str | None = None
        if (steps and isinstance(steps[-1], Step) and isinstance(steps[-1].kernel, Activation)
                and steps[-1].kernel.name in ("softmax", "sigmoid")):
            self.final_activation = steps[-1].kernel.name
            steps = steps[:-1]
        self.steps = steps  # the top stack (the whole model for a chain)
        # every Step in reading order (branch by branch), numbered with the Joins: ids are the
        # slots of a chunk's caches and the keys of the dropout noise
        self._flat: list[Step] = []
        self._count = self._number(steps, 0)
        self._caches: list | None = None
        self._parts: list[slice] = []
        self.input_grad: np.ndarray | None = None

    def _stack(self, nodes) -> list:
        """Steps and Joins for a list of model nodes (layers and blocks), `repeat` expanded."""
        steps: list = []
        for node in nodes:
            if isinstance(node, Block):
                if node.merge is None:  # repeat: its body, in sequence, in this stack
                    for branch in node.branches:
                        steps.extend(self._stack(branch))
                else:
                    steps.append(Join(node.name, node.merge, MERGE_KERNELS[node.merge](node),
                                      [self._stack(branch) for branch in node.branches]))
                continue
            layer = node
            steps.append(Step(layer.name, layer.kind, KERNELS[layer.kind](layer), tuple(layer.weights)))
            if layer.spec.split_activation:
                act = layer_activation(layer.kind, layer.options)
                if act != "linear":
                    steps.append(Step(layer.name, act, Activation(name=act), ()))
        # relu then maxpool == maxpool then relu, exactly (relu is monotone and exact in floats),
        # and so are the gradients (ties the swap could break are where relu's slope is 0 anyway):
        # pooling first makes the relu act on a quarter of the values
        for i in range(len(steps) - 1):
            a, b = steps[i], steps[i + 1]
            if (isinstance(a, Step) and isinstance(b, Step) and isinstance(a.kernel, Activation)
                    and a.kernel.name == "relu" and b.kind in ("maxpool1d", "maxpool2d")):
                steps[i], steps[i + 1] = b, a
        # a convolution then a max pool whose windows tile its output: one kernel, which computes
        # the convolution in the pool's order (nnc.engines.numpy.kernels_fused)
        i = 0
        while i < len(steps) - 1:
            a, b = steps[i], steps[i + 1]
            if (isinstance(a, Step) and isinstance(b, Step) and b.kind in ("maxpool1d", "maxpool2d")
                    and ConvMaxPool.fits(a.kernel, b.kernel)):
                steps[i] = Step(a.layer, a.kind, ConvMaxPool(a.kernel, b.kernel), a.weight_names)
                del steps[i + 1]
            i += 1
        return steps

    def _number(self, stack: list, k: int) -> int:
        for op in stack:
            op.id = k
            k += 1
            if isinstance(op, Join):
                for branch in op.branches:
                    k = self._number(branch, k)
            else:
                self._flat.append(op)
        return k

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
        for step in self._flat:
            # a kernel that drops units in training says which uniform draws it needs for a batch of n
            # (`draws(n)`: a list of shapes, each starting with n); they are taken here, in reading
            # order (a block's branches one after another), keyed by the step's id
            shapes = step.kernel.draws(n) if hasattr(step.kernel, "draws") else []
            if shapes:
                if rng is None:
                    raise ValueError("dropout in training needs an rng (numpy.random.Generator)")
                noise[step.id] = [rng.random(shape, dtype=self.dtype) for shape in shapes]
        return noise

    def _forward_chunk(self, h, training, noise, part, keep):
        caches = [None] * self._count if keep else None
        return self._run(h, self.steps, training, noise, part, caches), caches

    def _run(self, h, stack, training, noise, part, caches):
        for op in stack:
            if op.__class__ is Step:
                draws = _Drawn([a[part] for a in noise[op.id]]) if op.id in noise else None
                h, cache = op.kernel.forward(h, self._layer_weights(op), training, draws)
            else:  # a Join: every branch reads h
                x = _read_only(h) if len(op.branches) > 1 else h
                outs = [self._run(x, branch, training, noise, part, caches) if branch else x
                        for branch in op.branches]
                h, cache = op.kernel.forward(outs)
            if caches is not None:
                caches[op.id] = cache
        return h

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
        d = self._back(dz, self.steps, caches, need_input_grad, grads)
        return grads, d

    def _back(self, d, stack, caches, need_input, grads):
        """dL/d(the stack's input) from dL/d(its output), when need_input; weight gradients into grads."""
        for k in range(len(stack) - 1, -1, -1):
            op = stack[k]
            need_dx = k > 0 or need_input
            if op.__class__ is Step:
                d, g = op.kernel.backward(d, self._layer_weights(op), caches[op.id], need_dx)
                for n, v in g.items():
                    grads[f"{op.layer}.{n}"] = v
                continue
            shares = op.kernel.backward(d, caches[op.id])
            total = None  # the block's input fed every branch: their gradients add up there
            for branch, share in zip(op.branches, shares):
                share = _read_only(share)
                if branch:
                    share = self._back(share, branch, caches, need_dx, grads)
                if need_dx and share is not None:
                    total = share if total is None else total + share
            d = total
        return d

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
        (what evaluation needs: the loss fuses the final activation). Runs with subnormal floats
        flushed to zero (nnc.engines.numpy.fpenv; NNC_SUBNORMALS=keep keeps them), the caller's flags restored."""
        x = self._prepare(x)
        outs = []
        with fpenv.flush_subnormals():
            for start in range(0, len(x), batch_size):
                h = x[start : start + batch_size]
                parts = parallel.chunks(len(h), self.threads)
                zs = parallel.run(lambda part: self._forward_chunk(h[part], False, {}, part, False)[0], parts)
                outs.append(zs[0] if len(zs) == 1 else np.concatenate(zs))
        return np.concatenate(outs) if outs else np.zeros((0,) + tuple(self.model.output_shape), self.dtype)

    def predict(self, x, batch_size: int = 1024) -> np.ndarray:
        """Inference (dropout off), with the final activation: what Keras's model.predict returns."""
        with fpenv.flush_subnormals():
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
