"""A checked model as a PyTorch module, with Keras's semantics: the torch twin of nnc.engines.numpy.

    net = build(model, weights)             # weights: {"LAYER.kernel": array, ...} in Keras layouts
    z = net(x)                              # x: channels-last [batch, ...input] (int64 ids for embeddings)
    net.weights_numpy()                     # every weight (moving statistics too), Keras names and layouts

TorchNet runs what nnc.engines.numpy.Network runs: the output *before* the final softmax/sigmoid
(named in `final_activation`, for the loss to fuse), a dense or conv layer's `activation=` as a
step of its own, blocks as a tree of stacks (a Join runs each branch from the block's input and
joins them with TORCH_MERGES[merge]; `repeat` expanded in sequence), and in training the dropout
masks from uniform draws taken in the NumPy backend's order (`draw_noise`), so that the same numpy
Generator gives both engines the same masks.

Weights are parameters in Keras's layouts and names, so they move in and out with no conversion:
a dense layer is x @ kernel + bias, a conv2d runs F.conv2d on a permuted *view* of its
[kh, kw, in, out] kernel and of the channels-last input (a channels-first view of a channels-last
tensor is what PyTorch calls the channels_last memory format: no copies). batchnorm's moving
statistics are buffers, updated in training as Keras does (m <- m * momentum + batch * (1 - momentum),
biased variance). A parameter's attribute name is its Keras short name with '.' as '__'
(attention's `query.kernel` is `query__kernel`).

The layers compute with nnc.engines.torch.standalone's classes, the code `nnc export torch`
copies into its files, built from nnc.engines.torch.layers.TORCH_EXPORTS's arguments: a kind's
torch computation lives there, once (fast paths where PyTorch's fused op is exactly Keras's:
convolutions, pools, interpolate, layer_norm, scaled_dot_product_attention, torch's LSTM/GRU/RNN
kernels). What only the engine needs is here: each layer (a TorchLayer) holds its standalone
layer with the weights under their Keras names, the shapes of the uniform draws its dropout
takes (`draws`, handed to the standalone layer's `noise`), an embedding's out-of-range id as a
located UserError; batchnorm's `sync` is set by the engine under DistributedDataParallel.

One builder per kind in TORCH_KINDS and one join per merge in TORCH_MERGES, keyed like
nnc.engines.numpy.kernels.KERNELS and MERGE_KERNELS (tests/torch_engine checks both cover every kind).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from nnc.engines.torch import standalone
from nnc.engines.torch.layers import MERGE_FUNCTIONS, TORCH_EXPORTS, param_name
from nnc.lang.errors import UserError
from nnc.lang.kinds import layer_activation
from nnc.lang.model import Block

# cuDNN's RNN would compact the weights into one buffer at every call anyway: they are fresh
# tensors (Keras layouts transposed) at every step, so its advice to flatten_parameters() does not apply
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")


# --- layers: standalone.py's, with what only the engine needs -------------------------------------


def standalone_layer(layer) -> nn.Module:
    """The standalone.py layer of `layer`, built from TORCH_EXPORTS's arguments (what `nnc export
    torch` writes), without the `activation` of a layer that runs it as a step of its own."""
    cls, args = TORCH_EXPORTS[layer.kind](layer)
    if layer.spec.split_activation:
        args.pop("activation", None)
    return getattr(standalone, cls)(**args)


class TorchLayer(nn.Module):
    """One layer of the model: its standalone.py layer (`inner`) with the layer's weights.
    `attach` puts them there (Keras short names, '.' as '__'): trainable ones as parameters,
    `non_trainable` ones as buffers. `draws(n)` lists the shapes of the uniform draws a training
    batch of n needs (the NumPy kernels' protocol); forward(x, noise) gets them, in order, in
    `noise` (None outside training), and the inner layer's dropout masks take them."""

    def __init__(self, layer=None, inner: nn.Module | None = None):
        super().__init__()
        self.layer_name = layer.name if layer is not None else ""
        self.kind = layer.kind if layer is not None else ""
        self.inner = inner if inner is not None else standalone_layer(layer)
        self.weight_names: tuple[str, ...] = ()
        self.step_id = 0

    def attach(self, layer, weights: dict, dtype, device) -> None:
        frozen = set(layer.non_trainable)
        names = []
        for short in layer.weights:
            t = torch.as_tensor(np.asarray(weights[f"{layer.name}.{short}"]), device=device).to(dtype).clone()
            key = param_name(short)
            self.inner._parameters.pop(key, None)  # the standalone layer's zeros
            self.inner._buffers.pop(key, None)
            if short in frozen:
                self.inner.register_buffer(key, t)
            else:
                self.inner.register_parameter(key, nn.Parameter(t))
            names.append(short)
        self.weight_names = tuple(names)

    def w(self, short: str) -> torch.Tensor:
        return getattr(self.inner, param_name(short))

    def draws(self, n: int) -> list[tuple[int, ...]]:
        return []

    def forward(self, x, noise=None):
        if not noise:
            return self.inner(x)
        self.inner.noise = list(noise)
        try:
            return self.inner(x)
        finally:
            self.inner.noise = None


class Dropout(TorchLayer):
    """dropout: [n, *input] uniforms; spatial_dropout1d/2d: whole channels, [n, 1, c] or [n, 1, 1, c]."""

    def __init__(self, layer):
        super().__init__(layer)
        self.input_shape = tuple(layer.input_shape)

    def draws(self, n):
        if self.inner.rate == 0:
            return []
        shape = self.input_shape
        if self.kind.startswith("spatial"):
            shape = (1,) * (len(shape) - 1) + shape[-1:]
        return [(n,) + shape]


class Attention(TorchLayer):
    """Dropout on the attention probabilities: [n, heads, steps, steps] uniforms."""

    def __init__(self, layer):
        super().__init__(layer)
        self.steps = int(layer.input_shape[0])

    def draws(self, n):
        inner = self.inner
        return [(n, inner.heads, self.steps, self.steps)] if inner.dropout > 0 else []


class Recurrent(TorchLayer):
    """Keras's masks, per direction: [n, k, features] (dropout) and [n, k, units] (recurrent
    dropout), k = 1, or the number of gates for LSTM/GRU with recurrent dropout."""

    def __init__(self, layer):
        super().__init__(layer)
        self.features = int(layer.input_shape[-1])

    def draws(self, n):
        inner, shapes = self.inner, []
        if inner.dropout > 0:
            shapes.append((n, inner.masks, self.features))
        if inner.recurrent_dropout > 0:
            shapes.append((n, inner.masks, inner.units))
        return shapes * (2 if inner.bidirectional else 1)


class Embedding(TorchLayer):
    """An id outside the vocabulary is the user's error, located at the layer."""

    def forward(self, x, noise=None):
        try:
            return self.inner(x)
        except ValueError as e:
            vocab = self.inner.embeddings.shape[0]
            raise UserError(f"layer '{self.layer_name}' (embedding) has vocab={vocab}, so {e}") from None


TORCH_MERGES = {merge: getattr(standalone, fn) for merge, fn in MERGE_FUNCTIONS.items()}
"""The join of each merge block kind (nnc.lang.model.MERGES; `residual` joins with `add`):
standalone.py's function, fn(branch outputs) (concat: fn(outputs, axis=A))."""

TORCH_KINDS: dict[str, type] = {
    **{kind: TorchLayer for kind in TORCH_EXPORTS},
    "dropout": Dropout,
    "spatial_dropout1d": Dropout,
    "spatial_dropout2d": Dropout,
    "attention": Attention,
    "rnn": Recurrent,
    "lstm": Recurrent,
    "gru": Recurrent,
    "embedding": Embedding,
}
"""The engine's builder of each layer kind (nnc.lang.kinds.KINDS): TORCH_KINDS[kind](layer) ->
TorchLayer, the standalone layer TORCH_EXPORTS names with what the engine adds (the draws)."""


# --- the network ------------------------------------------------------------------------------


class Join(nn.Module):
    """A merge block: each branch (a ModuleList of steps; empty: the block's input) reads the
    block's input, TORCH_MERGES[merge] joins their outputs."""

    def __init__(self, block: Block, branches: list[nn.ModuleList]):
        super().__init__()
        self.block_name = block.name
        self.merge = block.merge
        # concat's axis (the batch is axis 0, as here)
        self.kwargs = {"axis": int(block.options["axis"])} if block.merge == "concat" and "axis" in block.options \
            else {}
        self.branches = nn.ModuleList(branches)
        self.step_id = 0


class TorchNet(nn.Module):
    def __init__(self, model, weights: dict[str, np.ndarray], device="cpu", dtype=torch.float32):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.np_dtype = np.dtype(str(dtype).replace("torch.", ""))
        missing = [k for k in model.weight_shapes() if k not in weights]
        if missing:
            raise UserError(f"weights for {model.name} lack {', '.join(repr(m) for m in missing[:5])}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        self._weights: dict[str, tuple[TorchLayer, str]] = {}  # Keras name -> (layer module, short name)
        steps = self._stack(model.body if model.body is not None else model.layers, weights, device)
        self.final_activation: str | None = None
        last = steps[-1].inner if steps and isinstance(steps[-1], TorchLayer) else None
        if isinstance(last, standalone.Activation) and last.name in ("softmax", "sigmoid"):
            self.final_activation = last.name
            steps = steps[:-1]
        self.steps = nn.ModuleList(steps)
        self._flat: list[TorchLayer] = []  # every layer step in reading order (a plain list: not registered twice)
        self._count = self._number(self.steps, 0)
        self._device = torch.device(device)  # where a weightless net (pools only) runs
        self.to(device)

    def _stack(self, nodes, weights, device) -> list[nn.Module]:
        steps: list[nn.Module] = []
        for node in nodes:
            if isinstance(node, Block):
                if node.merge is None:  # repeat: its body, in sequence, in this stack
                    for branch in node.branches:
                        steps.extend(self._stack(branch, weights, device))
                else:
                    steps.append(Join(node, [nn.ModuleList(self._stack(b, weights, device)) for b in node.branches]))
                continue
            layer = node
            mod = TORCH_KINDS[layer.kind](layer)
            mod.attach(layer, weights, self.dtype, device)
            for short in mod.weight_names:
                self._weights[f"{layer.name}.{short}"] = (mod, short)
            steps.append(mod)
            if layer.spec.split_activation:
                act = layer_activation(layer.kind, layer.options)
                if act != "linear":
                    a = TorchLayer(inner=standalone.Activation(act))
                    a.layer_name, a.kind = layer.name, act
                    steps.append(a)
        return steps

    def _number(self, stack, k: int) -> int:
        for op in stack:
            op.step_id = k
            k += 1
            if isinstance(op, Join):
                for branch in op.branches:
                    k = self._number(branch, k)
            else:
                self._flat.append(op)
        return k

    # --- inputs and noise ------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        return self._device

    def prepare(self, x) -> torch.Tensor:
        """A channels-last batch (numpy or tensor) checked against the spec's input, as a tensor
        on the net's device: int64 ids for an int64 input, the net's dtype otherwise."""
        want = tuple(self.model.input.shape)
        shape = tuple(x.shape)
        if len(shape) != len(want) + 1 or shape[1:] != want:
            raise UserError(f"input of {self.model.name} has shape {list(shape)}, but the spec's input "
                            f"'{self.model.input.name}' needs [batch, {', '.join(map(str, want))}]")
        if isinstance(x, np.ndarray):
            if self.model.input.dtype == "int64":
                x = x if np.issubdtype(x.dtype, np.integer) else x.astype(np.int64)
            x = torch.from_numpy(np.ascontiguousarray(x))
        dt = torch.int64 if self.model.input.dtype == "int64" else self.dtype
        return x.to(device=self.device, dtype=dt)

    def draw_noise(self, n: int, rng: np.random.Generator) -> dict[int, list[torch.Tensor]]:
        """Dropout's uniform draws for a training batch of n, taken from `rng` exactly as
        nnc.engines.numpy.Network takes them (reading order, the same shapes and dtype): with the same
        Generator both engines drop the same units."""
        noise = {}
        for step in self._flat:
            shapes = step.draws(n)
            if shapes:
                if rng is None:
                    raise ValueError("dropout in training needs an rng (numpy.random.Generator)")
                noise[step.step_id] = [torch.from_numpy(rng.random(s, dtype=self.np_dtype)).to(self.device)
                                       for s in shapes]
        return noise

    # --- running ---------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, noise: dict[int, list[torch.Tensor]] | None = None) -> torch.Tensor:
        """The output before `final_activation`. In training mode (net.train()), `noise` holds
        the uniform draws of the layers that drop units (draw_noise); those it lacks are drawn
        with torch's generator, on the device (standalone.Layer.mask)."""
        return self._run(x, self.steps, noise or {})

    def _run(self, h, stack, noise):
        for op in stack:
            if isinstance(op, Join):
                outs = [self._run(h, branch, noise) if len(branch) else h for branch in op.branches]
                h = TORCH_MERGES[op.merge](outs, **op.kwargs)
            else:
                h = op(h, noise.get(op.step_id))
        return h

    # --- weights ---------------------------------------------------------------------------------

    def named_weights(self) -> dict[str, torch.Tensor]:
        """Every weight tensor under its Keras name (`LAYER.kernel`), in the model's order."""
        return {name: self._weights[name][0].w(self._weights[name][1]) for name in self.model.weight_shapes()}

    def trainable(self) -> dict[str, nn.Parameter]:
        """The parameters an optimizer updates, under their Keras names (model.trainable_weights())."""
        return {name: self._weights[name][0].w(self._weights[name][1]) for name in self.model.trainable_weights()}

    def weights_numpy(self) -> dict[str, np.ndarray]:
        return {name: t.detach().cpu().numpy().copy() for name, t in self.named_weights().items()}

    @torch.no_grad()
    def load_numpy(self, weights: dict[str, np.ndarray]) -> None:
        for name, t in self.named_weights().items():
            if name not in weights:
                raise UserError(f"weights for {self.model.name} lack '{name}'")
            a = np.asarray(weights[name])
            if tuple(a.shape) != tuple(t.shape):
                raise UserError(f"weight '{name}' has shape {list(a.shape)}, but the spec needs {list(t.shape)}")
            t.copy_(torch.as_tensor(a).to(t.dtype))


def build(model, weights: dict[str, np.ndarray], device="cpu", dtype=torch.float32) -> TorchNet:
    """The TorchNet of a checked model with these weights (Keras names and layouts)."""
    return TorchNet(model, weights, device=device, dtype=dtype)
