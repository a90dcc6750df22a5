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

One builder per kind in TORCH_KINDS and one join per merge in TORCH_MERGES, keyed like
nnc.engines.numpy.kernels.KERNELS and MERGE_KERNELS (tests/torch_engine checks both cover every kind).
Fast paths where PyTorch's fused op is exactly Keras's: convolutions, pools, interpolate,
layer_norm, scaled_dot_product_attention (no dropout), and torch's LSTM/GRU/RNN kernels (Keras
gate order i, f, c, o is torch's i, f, g, o; a reset_after GRU is torch's GRU with the gates
reordered from z, r, h to r, z, n) for the default activations without recurrent dropout;
everything else on explicit cells written as the NumPy cores are.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnc.lang.errors import UserError
from nnc.lang.kinds import ACTIVATIONS, SELU_ALPHA, SELU_SCALE, layer_activation
from nnc.lang.model import Block

# cuDNN's RNN would compact the weights into one buffer at every call anyway: they are fresh
# tensors (Keras layouts transposed) at every step, so its advice to flatten_parameters() does not apply
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")

# --- activations ------------------------------------------------------------------------------


def _softplus(x):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|), as the NumPy kernel (torch's F.softplus switches
    # to x above its threshold), written with m = clamp(x, min=0) as m + log1p(e^(x - 2m)): exp of
    # a non-positive number only, and autograd's derivative is sigmoid(x) at x = 0 too (clamp
    # passes the gradient at its bound, where relu and abs would give 0)
    m = x.clamp(min=0)
    return m + torch.log1p(torch.exp(x - 2 * m))


def activate(name: str, x: torch.Tensor) -> torch.Tensor:
    """keras.activations.NAME(x) with its defaults (nnc.lang.kinds.ACTIVATIONS)."""
    if name == "linear":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "softmax":
        return torch.softmax(x, dim=-1)
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.2)
    if name == "elu":
        return F.elu(x, 1.0)
    if name == "selu":  # Keras's constants (torch's F.selu has longer ones)
        return SELU_SCALE * F.elu(x, SELU_ALPHA)
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name in ("silu", "swish"):
        return F.silu(x)
    if name == "softplus":
        return _softplus(x)
    if name == "softsign":
        return F.softsign(x)
    if name == "hard_sigmoid":  # Keras 3: relu6(x + 3) / 6; hardtanh's slope is 0 at the corners, as NumPy's
        return F.hardtanh(x + 3.0, 0.0, 6.0) / 6.0
    if name == "relu6":
        return F.hardtanh(x, 0.0, 6.0)
    if name == "mish":
        return x * torch.tanh(_softplus(x))
    if name == "log_softmax":
        return F.log_softmax(x, dim=-1)
    raise ValueError(f"unknown activation {name!r}")


def _key(short: str) -> str:
    """A weight's attribute name: parameter names may not contain dots."""
    return short.replace(".", "__")


def _mask(u: torch.Tensor, rate: float) -> torch.Tensor:
    """Inverted dropout's mask from uniform draws: kept (u >= rate) scaled by 1 / (1 - rate)."""
    return (u >= rate).to(u.dtype) * (1.0 / (1.0 - rate))


# --- layers -----------------------------------------------------------------------------------


class TorchLayer(nn.Module):
    """One layer of the model. `attach` registers its weights (Keras short names, '.' as '__'):
    trainable ones as parameters, `non_trainable` ones as buffers. `draws(n)` lists the shapes of
    the uniform draws a training batch of n needs (the NumPy kernels' protocol); forward(x, noise)
    gets them, in order, in `noise` (None outside training)."""

    def __init__(self, layer=None):
        super().__init__()
        self.layer_name = layer.name if layer is not None else ""
        self.kind = layer.kind if layer is not None else ""
        self.weight_names: tuple[str, ...] = ()
        self.step_id = 0

    def attach(self, layer, weights: dict, dtype, device) -> None:
        frozen = set(layer.non_trainable)
        names = []
        for short in layer.weights:
            t = torch.as_tensor(np.asarray(weights[f"{layer.name}.{short}"]), device=device).to(dtype).clone()
            if short in frozen:
                self.register_buffer(_key(short), t)
            else:
                self.register_parameter(_key(short), nn.Parameter(t))
            names.append(short)
        self.weight_names = tuple(names)

    def w(self, short: str) -> torch.Tensor:
        return getattr(self, _key(short))

    def has(self, short: str) -> bool:
        return _key(short) in self._parameters or _key(short) in self._buffers

    def draws(self, n: int) -> list[tuple[int, ...]]:
        return []


class Act(TorchLayer):
    """Every activation as a layer, and the activation option of dense and conv layers (a step
    of its own, as in Network, so that a final softmax/sigmoid can be left to the loss)."""

    def __init__(self, layer=None, name: str | None = None):
        super().__init__(layer)
        self.name = name if name is not None else layer.kind

    def forward(self, x, noise=None):
        return activate(self.name, x)


def _cf(x):
    """A channels-last tensor as a channels-first view (no copy)."""
    return x.movedim(-1, 1)


def _cl(x):
    return x.movedim(1, -1)


def _pad_arg(pads) -> list[int]:
    """F.pad's argument (last axis first) from (begin, end) pairs in axis order."""
    return [p for pair in reversed(list(pads)) for p in pair]


class _Windowed(TorchLayer):
    def __init__(self, layer):
        super().__init__(layer)
        spec, o = layer.spec, layer.options
        self.spatial = len(layer.input_shape) - 1
        self.window = tuple(spec.window(o))
        self.strides = tuple(spec.strides(o))
        self.dilation = tuple(spec.dilations(o))
        self.pads = [tuple(p) for p in spec.pads(o, layer.input_shape)]
        # symmetric padding rides in the op; Keras's asymmetric `same` (the odd pixel at the end)
        # and causal padding are an F.pad first
        self.symmetric = all(b == e for b, e in self.pads)

    def padded(self, xc, value=0.0):
        if self.symmetric or not any(b or e for b, e in self.pads):
            return xc, tuple(b for b, _ in self.pads)
        return F.pad(xc, _pad_arg(self.pads), value=value), (0,) * self.spatial


class Conv(_Windowed):
    """conv1d/conv2d: F.convNd on the channels-first view; kernel [*k, in/groups, out] viewed as
    torch's [out, in/groups, *k]."""

    def __init__(self, layer):
        super().__init__(layer)
        self.groups = layer.options.get("groups", 1)
        self.use_bias = layer.options["use_bias"]
        self.conv = F.conv1d if self.spatial == 1 else F.conv2d

    def forward(self, x, noise=None):
        k = self.w("kernel")
        weight = k.permute(-1, -2, *range(self.spatial))
        xc, pad = self.padded(_cf(x))
        y = self.conv(xc, weight, self.w("bias") if self.use_bias else None, self.strides, pad,
                      self.dilation, self.groups)
        return _cl(y)


class DepthwiseConv(_Windowed):
    """depthwise_conv1d/2d: a grouped convolution, a group per input channel; kernel [*k, in, dm]
    viewed as [in*dm, 1, *k] (output channel c*dm + m, Keras's order)."""

    def __init__(self, layer, use_bias: bool | None = None, kernel: str = "kernel"):
        super().__init__(layer)
        self.channels = layer.input_shape[-1]
        self.use_bias = layer.options["use_bias"] if use_bias is None else use_bias
        self.kernel_name = kernel
        self.conv = F.conv1d if self.spatial == 1 else F.conv2d

    def depthwise(self, x, k, bias):
        weight = k.reshape(k.shape[:-2] + (-1,)).permute(-1, *range(self.spatial)).unsqueeze(1)
        xc, pad = self.padded(_cf(x))
        return _cl(self.conv(xc, weight, bias, self.strides, pad, self.dilation, self.channels))

    def forward(self, x, noise=None):
        return self.depthwise(x, self.w("kernel"), self.w("bias") if self.use_bias else None)


class SeparableConv(DepthwiseConv):
    """separable_conv1d/2d: the depthwise step (no bias) then a pointwise matrix product and the bias."""

    def __init__(self, layer):
        super().__init__(layer, use_bias=False)
        self.pointwise_bias = layer.options["use_bias"]

    def forward(self, x, noise=None):
        h = self.depthwise(x, self.w("depthwise_kernel"), None)
        pw = self.w("pointwise_kernel")
        y = h @ pw.reshape(pw.shape[-2], pw.shape[-1])
        return y + self.w("bias") if self.pointwise_bias else y


class ConvTranspose(TorchLayer):
    """conv1d_transpose/conv2d_transpose: the full transposed convolution ((n - 1) * stride + k
    long; kernel [*k, filters, in] viewed as torch's [in, filters, *k]), cropped by kinds' crops
    or, where Keras's output is longer (k < stride), padded with zeros at the end; then the bias."""

    def __init__(self, layer):
        super().__init__(layer)
        o = layer.options
        self.spatial = len(layer.input_shape) - 1
        self.strides = tuple(o["stride"])
        self.use_bias = o["use_bias"]
        self.crops = [tuple(c) for c in layer.spec.crops(o, layer.input_shape)]
        self.out = tuple(layer.output_shape[:-1])
        self.conv = F.conv_transpose1d if self.spatial == 1 else F.conv_transpose2d

    def forward(self, x, noise=None):
        k = self.w("kernel")
        y = self.conv(_cf(x), k.permute(-1, -2, *range(self.spatial)), None, self.strides)
        # crop (b, e) per axis, then pad the end up to Keras's length
        index = [slice(None), slice(None)]
        pads = []
        for axis, ((b, e), n) in enumerate(zip(self.crops, self.out)):
            size = y.shape[2 + axis]
            index.append(slice(b, size - e))
            pads.append((0, max(n - (size - b - e), 0)))
        y = y[tuple(index)]
        if any(p for _, p in pads):
            y = F.pad(y, _pad_arg(pads))
        y = _cl(y)
        return y + self.w("bias") if self.use_bias else y


class MaxPool(_Windowed):
    """maxpool1d/2d; `same` pads with -inf (the gradient of a window goes to its maximum)."""

    def forward(self, x, noise=None):
        xc, pad = self.padded(_cf(x), value=-math.inf)
        if self.spatial == 1:
            return _cl(F.max_pool1d(xc, self.window, self.strides, pad))
        return _cl(F.max_pool2d(xc, self.window, self.strides, pad))


class AvgPool(_Windowed):
    """avgpool1d/2d: with `same`, each window divided by its number of unpadded elements (the
    window sums, from a zero-padded input, over per-position counts)."""

    def __init__(self, layer):
        super().__init__(layer)
        self.out = tuple(layer.output_shape[:-1])
        counts = np.ones(self.out, dtype=np.float64)
        for axis, (size, k, s, (b, _), n) in enumerate(zip(layer.input_shape[:-1], self.window, self.strides,
                                                             self.pads, self.out)):
            start = np.arange(n) * s - b
            c = np.minimum(start + k, size) - np.maximum(start, 0)
            shape = [1] * len(self.out)
            shape[axis] = n
            counts = counts * c.reshape(shape)
        self.register_buffer("counts", torch.as_tensor(counts), persistent=False)
        self.pads_any = any(b or e for b, e in self.pads)

    def forward(self, x, noise=None):
        xc = _cf(x)
        if self.spatial == 1:  # through the 2-D op: avg_pool1d has no divisor_override
            xc = xc.unsqueeze(2)
            window, strides, pads = (1,) + self.window, (1,) + self.strides, [(0, 0)] + self.pads
        else:
            window, strides, pads = self.window, self.strides, self.pads
        if not self.pads_any:
            y = F.avg_pool2d(xc, window, strides)
        else:
            xp = F.pad(xc, _pad_arg(pads))
            y = F.avg_pool2d(xp, window, strides, divisor_override=1) / self.counts.to(x.dtype)
        if self.spatial == 1:
            y = y.squeeze(2)
        return _cl(y)


class GlobalMaxPool(TorchLayer):
    def forward(self, x, noise=None):
        return x.reshape(x.shape[0], -1, x.shape[-1]).max(dim=1).values


class GlobalAvgPool(TorchLayer):
    def forward(self, x, noise=None):
        return x.mean(dim=tuple(range(1, x.dim() - 1)))


class Flatten(TorchLayer):
    def forward(self, x, noise=None):
        return x.reshape(x.shape[0], -1)


class Dense(TorchLayer):
    """x @ kernel + bias on the last axis (F.linear with the kernel's transposed view)."""

    def __init__(self, layer):
        super().__init__(layer)
        self.use_bias = layer.options["use_bias"]

    def forward(self, x, noise=None):
        return F.linear(x, self.w("kernel").t(), self.w("bias") if self.use_bias else None)


class Dropout(TorchLayer):
    """Inverted dropout with the noise Network draws: [n, *input] uniforms, kept where >= rate."""

    def __init__(self, layer):
        super().__init__(layer)
        self.rate = float(layer.options["rate"])
        self.input_shape = tuple(layer.input_shape)

    def noise_shape(self, n):
        return (n,) + self.input_shape

    def draws(self, n):
        return [self.noise_shape(n)] if self.rate > 0 else []

    def forward(self, x, noise=None):
        if not self.training or self.rate == 0.0:
            return x
        return x * _mask(noise[0], self.rate)


class SpatialDropout(Dropout):
    """SpatialDropout1D/2D: whole channels, noise [n, 1, c] or [n, 1, 1, c]."""

    def __init__(self, layer):
        super().__init__(layer)
        self.input_shape = (1,) * (len(layer.input_shape) - 1) + (layer.input_shape[-1],)


class Embedding(TorchLayer):
    def __init__(self, layer):
        super().__init__(layer)
        self.vocab = layer.weights["embeddings"][0]

    def forward(self, x, noise=None):
        if x.numel():
            lo, hi = torch.stack(torch.aminmax(x)).tolist()  # one sync with the device
            if lo < 0 or hi >= self.vocab:
                bad = lo if lo < 0 else hi
                raise UserError(f"layer '{self.layer_name}' (embedding) has vocab={self.vocab}, so token ids "
                                f"must be in 0..{self.vocab - 1}; the input has id {bad}")
        return F.embedding(x, self.w("embeddings"))


class LeakyRelu(TorchLayer):
    def __init__(self, layer):
        super().__init__(layer)
        self.slope = float(layer.options["negative_slope"])

    def forward(self, x, noise=None):
        return F.leaky_relu(x, self.slope)


class Elu(TorchLayer):
    def __init__(self, layer):
        super().__init__(layer)
        self.alpha = float(layer.options["alpha"])

    def forward(self, x, noise=None):
        return F.elu(x, self.alpha)


class Prelu(TorchLayer):
    def forward(self, x, noise=None):
        return torch.where(x > 0, x, self.w("alpha") * x)


class Batchnorm(TorchLayer):
    """Each channel (the last axis) by the batch's mean and biased variance in training (the
    moving statistics updated in place, no gradient), by the moving ones in inference.

    `sync` (set by the engine under DistributedDataParallel, where each process holds a share of
    the global batch): the statistics are the global batch's, summed across the processes by a
    differentiable all-reduce (as torch's SyncBatchNorm), so that N processes compute the step
    one process computes on the whole batch, as Keras would."""

    sync = False

    def __init__(self, layer):
        super().__init__(layer)
        o = layer.options
        self.momentum, self.epsilon = float(o["momentum"]), float(o["epsilon"])
        self.center, self.scale = o["center"], o["scale"]

    def forward(self, x, noise=None):
        axes = tuple(range(x.dim() - 1))
        mm, mv = self.w("moving_mean"), self.w("moving_variance")
        if self.training and self.sync:
            from torch.distributed.nn.functional import all_reduce  # sums; its gradient sums too

            # one all-reduce for the count and the sums, one for the squares about the global mean
            sums = all_reduce(torch.cat([x.sum(dim=axes), x.new_full((1,), x.numel() // max(x.shape[-1], 1))]))
            count = sums[-1].clamp(min=1)
            mean = sums[:-1] / count
            centered = x - mean
            var = all_reduce(centered.square().sum(dim=axes)) / count
        elif self.training:
            mean = x.mean(dim=axes)
            centered = x - mean
            var = centered.square().mean(dim=axes)
        if self.training:
            with torch.no_grad():
                m = self.momentum
                mm.copy_(mm * m + mean.detach().to(mm.dtype) * (1 - m))
                mv.copy_(mv * m + var.detach().to(mv.dtype) * (1 - m))
        else:
            centered = x - mm.to(x.dtype)
            var = mv.to(x.dtype)
        y = centered * torch.rsqrt(var + self.epsilon)
        if self.scale:
            y = y * self.w("gamma")
        if self.center:
            y = y + self.w("beta")
        return y


class Layernorm(TorchLayer):
    def __init__(self, layer):
        super().__init__(layer)
        o = layer.options
        self.epsilon, self.center, self.scale = float(o["epsilon"]), o["center"], o["scale"]

    def forward(self, x, noise=None):
        return F.layer_norm(x, (x.shape[-1],), self.w("gamma") if self.scale else None,
                            self.w("beta") if self.center else None, self.epsilon)


class Reshape(TorchLayer):
    def __init__(self, layer):
        super().__init__(layer)
        self.shape = tuple(layer.output_shape)

    def forward(self, x, noise=None):
        return x.reshape((x.shape[0],) + self.shape)


class Permute(TorchLayer):
    def __init__(self, layer):
        super().__init__(layer)
        self.order = (0,) + tuple(int(a) for a in layer.options["axes"])

    def forward(self, x, noise=None):
        return x.permute(self.order)


class RepeatVector(TorchLayer):
    def __init__(self, layer):
        super().__init__(layer)
        self.n = int(layer.options["n"])

    def forward(self, x, noise=None):
        return x.unsqueeze(1).expand(x.shape[0], self.n, x.shape[1])


class Upsampling(TorchLayer):
    """nearest: rows (columns) repeated; bilinear: F.interpolate with align_corners=False, which
    is Keras 3's image.resize on the torch backend (the NumPy kernel's resize matrices)."""

    def __init__(self, layer):
        super().__init__(layer)
        size = layer.options["size"]
        self.size = (size,) if isinstance(size, int) else tuple(size)
        self.bilinear = layer.options.get("interpolation", "nearest") == "bilinear"
        self.out = tuple(layer.output_shape[:-1])

    def forward(self, x, noise=None):
        if self.bilinear:
            return _cl(F.interpolate(_cf(x), size=self.out, mode="bilinear", align_corners=False))
        for axis, s in enumerate(self.size, start=1):
            if s > 1:
                x = x.repeat_interleave(s, dim=axis)
        return x


class ZeroPad(TorchLayer):
    def __init__(self, layer):
        super().__init__(layer)
        self.pads = [(0, 0)] + [tuple(p) for p in layer.options["padding"]] + [(0, 0)]

    def forward(self, x, noise=None):
        return F.pad(x, _pad_arg(self.pads))


class Cropping(TorchLayer):
    def __init__(self, layer):
        super().__init__(layer)
        self.crops = [tuple(p) for p in layer.options["cropping"]]

    def forward(self, x, noise=None):
        inner = tuple(slice(b, n - e) for (b, e), n in zip(self.crops, x.shape[1:-1]))
        return x[(slice(None),) + inner]


class Attention(TorchLayer):
    """MultiHeadAttention as self-attention, as the NumPy kernel: q, k, v projections (kernels
    [F, heads, dim]), q scaled by 1/sqrt(key_dim), softmax over the keys (causal: key s <= query
    t), dropout on the probabilities in training, the output projection [heads, value_dim, F].
    Without dropout, F.scaled_dot_product_attention (scale 1: q is scaled already)."""

    def __init__(self, layer):
        super().__init__(layer)
        o = layer.options
        self.heads, self.key_dim = int(o["heads"]), int(o["key_dim"])
        self.value_dim = int(o["value_dim"] or o["key_dim"])
        self.rate, self.causal, self.use_bias = float(o["dropout"]), bool(o["causal"]), bool(o["use_bias"])
        self.steps = int(layer.input_shape[0])

    def draws(self, n):
        return [(n, self.heads, self.steps, self.steps)] if self.rate > 0 else []

    def _project(self, x, part):
        kernel = self.w(f"{part}.kernel")
        p = x @ kernel.reshape(kernel.shape[0], -1)
        if self.use_bias:
            p = p + self.w(f"{part}.bias").reshape(-1)
        n, T = x.shape[:2]
        return p.reshape(n, T, self.heads, -1).transpose(1, 2)  # [n, heads, T, dim]

    def forward(self, x, noise=None):
        n, T, Fe = x.shape
        q = self._project(x, "query") * (1.0 / math.sqrt(self.key_dim))
        k = self._project(x, "key")
        v = self._project(x, "value")
        if self.training and self.rate > 0:
            scores = q @ k.transpose(-1, -2)
            if self.causal:
                keep = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
                scores = scores.masked_fill(~keep, -math.inf)
            P = torch.softmax(scores, dim=-1)
            ctx = (P * _mask(noise[0], self.rate)) @ v
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=1.0)
        ctx2 = ctx.transpose(1, 2).reshape(n, T, self.heads * self.value_dim)
        wo = self.w("attention_output.kernel")
        y = ctx2 @ wo.reshape(-1, Fe)
        return y + self.w("attention_output.bias") if self.use_bias else y


class PositionEmbedding(TorchLayer):
    def forward(self, x, noise=None):
        return x + self.w("embeddings")[: x.shape[1]]


# --- recurrent layers -------------------------------------------------------------------------


def _split(a, k):
    u = a.shape[-1] // k
    return [a[..., g * u : (g + 1) * u] for g in range(k)]


class Recurrent(TorchLayer):
    """rnn, lstm and gru with every option: one direction or Keras's Bidirectional (a forward and
    a go_backwards copy, the latter's sequence flipped back before the merge when
    return_sequences), go_backwards (the returned sequence in reading order, as Keras 3 returns
    it), dropout and recurrent_dropout (Keras's masks: per direction [n, k, features] and
    [n, k, units] draws, k = 1, or the number of gates for LSTM/GRU with recurrent dropout),
    any activations. Fast path: torch's fused LSTM/GRU/RNN kernels for the default activations
    (rnn: tanh or relu; gru: reset_after) without recurrent dropout, an input dropout mask
    multiplied in front; everything else on explicit cells."""

    gates = 1

    def __init__(self, layer):
        super().__init__(layer)
        o = layer.options
        self.units = o["units"]
        self.return_sequences = o["return_sequences"]
        self.bidirectional = bool(o.get("bidirectional", False))
        self.merge = o.get("merge", "concat")
        self.go_backwards = bool(o.get("go_backwards", False))
        self.dropout = float(o.get("dropout", 0.0))
        self.recurrent_dropout = float(o.get("recurrent_dropout", 0.0))
        self.features = layer.input_shape[-1]
        self.act = o.get("activation", "tanh")
        self.ract = o.get("recurrent_activation", "sigmoid")
        self.reset_after = bool(o.get("reset_after", True))
        self.k = self.gates if self.gates > 1 and self.recurrent_dropout > 0 else 1
        u = self.units  # torch's GRU gate order r, z, n from Keras's z, r, h
        self.register_buffer("gru_order", torch.cat([torch.arange(u, 2 * u), torch.arange(0, u),
                                                     torch.arange(2 * u, 3 * u)]), persistent=False)

    def fast_ok(self) -> bool:
        if self.kind == "rnn":
            return self.act in ("tanh", "relu")
        return self.act == "tanh" and self.ract == "sigmoid" and (self.kind == "lstm" or self.reset_after)

    def _direction_draws(self, n):
        shapes = []
        if self.dropout > 0:
            shapes.append((n, self.k, self.features))
        if self.recurrent_dropout > 0:
            shapes.append((n, self.k, self.units))
        return shapes

    def draws(self, n):
        return self._direction_draws(n) * (2 if self.bidirectional else 1)

    def _masks(self, noise):
        """(input mask, recurrent mask) of the next direction, from the noise list (consumed)."""
        out = []
        for rate in (self.dropout, self.recurrent_dropout):
            out.append(_mask(noise.pop(0), rate) if rate > 0 and self.training else None)
        return tuple(out)

    def forward(self, x, noise=None):
        noise = list(noise) if noise else []
        dirs = ("forward.", "backward.") if self.bidirectional else ("",)
        ys = []
        for prefix in dirs:
            masks = self._masks(noise) if self.training and (self.dropout > 0 or self.recurrent_dropout > 0) \
                else (None, None)
            backwards = prefix == "backward." or self.go_backwards
            ys.append(self._direction(x.flip(1) if backwards else x, prefix, masks))
        if not self.bidirectional:
            return ys[0]
        yf, yb = ys
        if self.return_sequences:
            yb = yb.flip(1)  # back in the input's order
        if self.merge == "concat":
            return torch.cat([yf, yb], dim=-1)
        if self.merge == "sum":
            return yf + yb
        if self.merge == "mul":
            return yf * yb
        return (yf + yb) / 2

    def _direction(self, x, prefix, masks):
        W, U, b = self.w(prefix + "kernel"), self.w(prefix + "recurrent_kernel"), self.w(prefix + "bias")
        mi, mr = masks
        if self.fast_ok() and mr is None:
            return self._fast(x if mi is None else x * mi, W, U, b)
        H = self._cells(x, W, U, b, mi, mr)
        return torch.stack(H, dim=1) if self.return_sequences else H[-1]

    def _fast(self, x, W, U, b):
        # torch's weights are [gates*u, in] (cuDNN wants them contiguous: a copy per call, which
        # the weights changing at every step would need anyway); no recurrent bias but the GRU's
        n, u = x.shape[0], self.units
        x = x.contiguous()
        h0 = x.new_zeros(1, n, u)
        train = self.training
        if self.kind == "lstm":  # Keras's i, f, c, o is torch's i, f, g, o
            params = [W.t().contiguous(), U.t().contiguous(), b, torch.zeros_like(b)]
            out, hn, _ = torch.lstm(x, (h0, h0), params, True, 1, 0.0, train, False, True)
        elif self.kind == "gru":  # reset_after: torch's GRU with z, r, h reordered as r, z, n
            order = self.gru_order
            params = [W[:, order].t().contiguous(), U[:, order].t().contiguous(), b[0, order], b[1, order]]
            out, hn = torch.gru(x, h0, params, True, 1, 0.0, train, False, True)
        else:
            fn = torch.rnn_tanh if self.act == "tanh" else torch.rnn_relu
            out, hn = fn(x, h0, [W.t().contiguous(), U.t().contiguous(), b, torch.zeros_like(b)], True, 1, 0.0,
                         train, False, True)
        return out if self.return_sequences else hn[0]

    def _in(self, x, W, mi):
        """The input projection of every step [n, T, gates*u]: (x * mask_g) @ W_g."""
        if mi is None:
            return x @ W
        if mi.shape[1] == 1:
            return (x * mi) @ W
        return torch.cat([(x * mi[:, g : g + 1]) @ Wg for g, Wg in enumerate(_split(W, self.k))], dim=-1)

    def _rec(self, h, U, mr):
        """h @ U, each gate's part with its own recurrent mask where there is one per gate."""
        if mr is None:
            return h @ U
        if mr.shape[1] == 1:
            return (h * mr[:, 0]) @ U
        return torch.cat([(h * mr[:, g]) @ Ug for g, Ug in enumerate(_split(U, self.gates))], dim=-1)

    def _cells(self, x, W, U, b, mi, mr):
        n, T = x.shape[:2]
        u = self.units
        h = x.new_zeros(n, u)
        H = []
        if self.kind == "rnn":
            Z = self._in(x, W, mi) + b
            for t in range(T):
                rec = h @ U if mr is None else (h * mr[:, 0]) @ U
                h = activate(self.act, Z[:, t] + rec if t else Z[:, t])
                H.append(h)
            return H
        if self.kind == "lstm":
            A = self._in(x, W, mi) + b
            c = x.new_zeros(n, u)
            for t in range(T):
                a = A[:, t] + self._rec(h, U, mr) if t else A[:, t]
                ai, af, ac, ao = _split(a, 4)
                i, f, o = activate(self.ract, ai), activate(self.ract, af), activate(self.ract, ao)
                c = f * c + i * activate(self.act, ac)
                h = o * activate(self.act, c)
                H.append(h)
            return H
        # gru: z, r, h~
        if self.reset_after:
            P = self._in(x, W, mi) + b[0]
            for t in range(T):
                rec = self._rec(h, U, mr) + b[1]
                pz, pr, ph = _split(P[:, t], 3)
                rz, rr, rh = _split(rec, 3)
                z, r = activate(self.ract, pz + rz), activate(self.ract, pr + rr)
                hh = activate(self.act, ph + r * rh)
                h = z * h + (1 - z) * hh
                H.append(h)
            return H
        P = self._in(x, W, mi) + b
        Uz, Ur, Uh = _split(U, 3)
        mh = None if mr is None else mr[:, 0] if mr.shape[1] == 1 else mr[:, 2]
        for t in range(T):
            pz, pr, ph = _split(P[:, t], 3)
            if mr is None:
                rz, rr = h @ Uz, h @ Ur
            elif mr.shape[1] == 1:
                rz, rr = (h * mr[:, 0]) @ Uz, (h * mr[:, 0]) @ Ur
            else:
                rz, rr = (h * mr[:, 0]) @ Uz, (h * mr[:, 1]) @ Ur
            z, r = activate(self.ract, pz + rz), activate(self.ract, pr + rr)
            hh = activate(self.act, ph + (r * (h if mh is None else h * mh)) @ Uh)
            h = z * h + (1 - z) * hh
            H.append(h)
        return H


class Rnn(Recurrent):
    gates = 1


class Lstm(Recurrent):
    gates = 4


class Gru(Recurrent):
    gates = 3


# --- merges: the joins of blocks --------------------------------------------------------------


def _add(xs, options):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


def _average(xs, options):
    return _add(xs, options) / len(xs)


def _subtract(xs, options):
    if len(xs) != 2:
        raise ValueError(f"subtract joins two branches, not {len(xs)}")
    return xs[0] - xs[1]


def _multiply(xs, options):
    y = xs[0]
    for x in xs[1:]:
        y = y * x
    return y


def _maximum(xs, options):
    # a left fold of torch.maximum: a tie splits the gradient in halves (Keras on torch; NumPy's kernel)
    y = xs[0]
    for x in xs[1:]:
        y = torch.maximum(y, x)
    return y


def _minimum(xs, options):
    y = xs[0]
    for x in xs[1:]:
        y = torch.minimum(y, x)
    return y


def _concat(xs, options):
    return torch.cat(xs, dim=int(options.get("axis", -1)))  # the batch is axis 0, as here


TORCH_MERGES = {
    "add": _add,
    "average": _average,
    "subtract": _subtract,
    "multiply": _multiply,
    "maximum": _maximum,
    "minimum": _minimum,
    "concat": _concat,
}
"""The join of each merge block kind (nnc.lang.model.MERGES; `residual` joins with `add`):
fn(branch outputs, block options) -> tensor."""

TORCH_KINDS: dict[str, type] = {
    "conv1d": Conv,
    "conv2d": Conv,
    "maxpool1d": MaxPool,
    "maxpool2d": MaxPool,
    "avgpool1d": AvgPool,
    "avgpool2d": AvgPool,
    "globalmaxpool": GlobalMaxPool,
    "globalavgpool": GlobalAvgPool,
    "flatten": Flatten,
    "dense": Dense,
    "dropout": Dropout,
    **{a: Act for a in ACTIVATIONS if a not in ("leaky_relu", "elu")},
    "leaky_relu": LeakyRelu,
    "elu": Elu,
    "prelu": Prelu,
    "embedding": Embedding,
    "rnn": Rnn,
    "lstm": Lstm,
    "gru": Gru,
    "batchnorm": Batchnorm,
    "layernorm": Layernorm,
    "separable_conv1d": SeparableConv,
    "separable_conv2d": SeparableConv,
    "depthwise_conv1d": DepthwiseConv,
    "depthwise_conv2d": DepthwiseConv,
    "conv1d_transpose": ConvTranspose,
    "conv2d_transpose": ConvTranspose,
    "upsampling1d": Upsampling,
    "upsampling2d": Upsampling,
    "zeropad1d": ZeroPad,
    "zeropad2d": ZeroPad,
    "cropping1d": Cropping,
    "cropping2d": Cropping,
    "reshape": Reshape,
    "permute": Permute,
    "repeat_vector": RepeatVector,
    "spatial_dropout1d": SpatialDropout,
    "spatial_dropout2d": SpatialDropout,
    "attention": Attention,
    "position_embedding": PositionEmbedding,
}
"""The builder of each layer kind (nnc.lang.kinds.KINDS): TORCH_KINDS[kind](layer) -> TorchLayer."""


# --- the network ------------------------------------------------------------------------------


class Join(nn.Module):
    """A merge block: each branch (a ModuleList of steps; empty: the block's input) reads the
    block's input, TORCH_MERGES[merge] joins their outputs."""

    def __init__(self, block: Block, branches: list[nn.ModuleList]):
        super().__init__()
        self.block_name = block.name
        self.merge = block.merge
        self.options = dict(block.options)
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
        if steps and isinstance(steps[-1], Act) and steps[-1].name in ("softmax", "sigmoid"):
            self.final_activation = steps[-1].name
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
                    a = Act(name=act)
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
        with torch's generator, on the device."""
        return self._run(x, self.steps, noise or {}, len(x))

    def _run(self, h, stack, noise, n):
        for op in stack:
            if isinstance(op, Join):
                outs = [self._run(h, branch, noise, n) if len(branch) else h for branch in op.branches]
                h = TORCH_MERGES[op.merge](outs, op.options)
                continue
            draws = noise.get(op.step_id)
            if draws is None and self.training:
                shapes = op.draws(n)
                draws = [torch.rand(s, dtype=self.dtype, device=h.device) for s in shapes] if shapes else None
            h = op(h, draws)
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
