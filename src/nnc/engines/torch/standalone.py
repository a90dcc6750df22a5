"""nnc's layers as plain PyTorch modules: the source that `nnc export torch` copies, verbatim,
into the model files it writes (nnc.tools.torch_export picks the definitions a model needs, with
the helpers they use, and writes them above the model's class).

This module imports torch and math, never nnc or numpy: what it holds must run where only torch
is installed. Every layer reads and writes channels-last tensors ([batch, steps, channels],
[batch, height, width, channels]) as Keras does, keeps its weights in Keras's layouts under
Keras's short names ('.' written '__': attention's `query.kernel` is `query__kernel`, a
bidirectional layer's `forward.kernel` is `forward__kernel`), and computes what Keras computes:
`same` padding with the odd pixel at the end, Keras's gate orders, GRU's reset_after, batchnorm's
momentum, dropout only in training mode (module.train()), the moving statistics in eval mode.

A layer is built from its weights' shapes (`shapes`: short name -> shape) and its options; its
weights start at zero, for load_state_dict to fill. Non-trainable weights (batchnorm's moving
statistics) are buffers, the others parameters: both are in the state_dict.

The torch engine (nnc.engines.torch.modules) computes with these classes too, so every layer is
held to nnc's NumPy engine twice: as exported (tests/torch_engine/test_torch_export.py) and, with
its gradients in float64 and float32, as trained (tests/torch_engine/test_torch_modules.py).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

# Keras's SELU constants (keras.activations.selu; torch's F.selu has longer ones)
SELU_ALPHA = 1.67326324
SELU_SCALE = 1.05070098


def softplus(x):
    """log(1 + e^x), as Keras (torch's F.softplus switches to x above a threshold)."""
    m = x.clamp(min=0)
    return m + torch.log1p(torch.exp(x - 2 * m))


def activate(name, x):
    """keras.activations.NAME(x) with its defaults."""
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
    if name == "selu":
        return SELU_SCALE * F.elu(x, SELU_ALPHA)
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name in ("silu", "swish"):
        return F.silu(x)
    if name == "softplus":
        return softplus(x)
    if name == "softsign":
        return F.softsign(x)
    if name == "hard_sigmoid":  # Keras 3: relu6(x + 3) / 6
        return F.hardtanh(x + 3.0, 0.0, 6.0) / 6.0
    if name == "relu6":
        return F.hardtanh(x, 0.0, 6.0)
    if name == "mish":
        return x * torch.tanh(softplus(x))
    if name == "log_softmax":
        return F.log_softmax(x, dim=-1)
    raise ValueError(f"unknown activation {name!r}")


class Layer(nn.Module):
    """Base of the layers: `shapes` (Keras short name -> shape) become zero parameters, or
    buffers for the names in `buffers`.

    `noise`: None, or a list of uniform draws in [0, 1) that the next forward's dropout masks
    take, in order, instead of drawing from torch's generator (nnc's training engine gives each
    layer the draws its NumPy engine takes, so that both drop the same units)."""

    def __init__(self, shapes=None, buffers=()):
        super().__init__()
        self.noise = None
        for name, shape in (shapes or {}).items():
            if name in buffers:
                self.register_buffer(name, torch.zeros(shape))
            else:
                self.register_parameter(name, nn.Parameter(torch.zeros(shape)))

    def has(self, name):
        return name in self._parameters or name in self._buffers

    def mask(self, shape, rate, like):
        """Inverted dropout's mask of `shape`, `like`'s dtype and device: a unit is kept where its
        uniform draw is >= rate, scaled by 1 / (1 - rate); 0 where dropped."""
        u = self.noise.pop(0) if self.noise else torch.rand(shape, dtype=like.dtype, device=like.device)
        return (u >= rate).to(like.dtype) * (1.0 / (1.0 - rate))


class Activation(Layer):
    """An activation as a layer (keras.layers.Activation)."""

    def __init__(self, name):
        super().__init__()
        self.name = name

    def forward(self, x):
        return activate(self.name, x)

    def extra_repr(self):
        return repr(self.name)


class LeakyRelu(Layer):
    def __init__(self, negative_slope):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)


class Elu(Layer):
    def __init__(self, alpha):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)


class Prelu(Layer):
    """Leaky relu with a learned slope per input element (`alpha`)."""

    def forward(self, x):
        return torch.where(x > 0, x, self.alpha * x)


def channels_first(x):
    """A channels-last tensor as a channels-first view (no copy)."""
    return x.movedim(-1, 1)


def channels_last(x):
    return x.movedim(1, -1)


def pad_arg(pads):
    """F.pad's argument (last axis first) from (begin, end) pairs in axis order."""
    return [p for pair in reversed(list(pads)) for p in pair]


def window_padding(x, pads, value=0.0):
    """A channels-first x and the padding argument of a window op: symmetric (begin, end) pairs
    ride in the op; Keras's asymmetric `same` (the odd pixel at the end) and causal padding are
    an F.pad first."""
    if all(b == e for b, e in pads):
        return x, tuple(b for b, _ in pads)
    return F.pad(x, pad_arg(pads), value=value), (0,) * len(pads)


class Conv(Layer):
    """conv1d / conv2d: F.convNd on the channels-first view of the input; the kernel
    [*window, in / groups, filters] viewed as torch's [filters, in / groups, *window]. `pads`:
    (begin, end) per spatial axis (Keras's `same` puts the odd pixel at the end)."""

    def __init__(self, shapes, stride, pads, dilation=None, groups=1, activation="linear"):
        super().__init__(shapes)
        self.stride, self.pads = tuple(stride), [tuple(p) for p in pads]
        self.dilation = tuple(dilation) if dilation else (1,) * len(self.pads)
        self.groups, self.activation = groups, activation

    def forward(self, x):
        spatial = len(self.pads)
        weight = self.kernel.permute(-1, -2, *range(spatial))
        xc, pad = window_padding(channels_first(x), self.pads)
        conv = F.conv1d if spatial == 1 else F.conv2d
        y = conv(xc, weight, self.bias if self.has("bias") else None, self.stride, pad, self.dilation, self.groups)
        return activate(self.activation, channels_last(y))


class DepthwiseConv(Layer):
    """depthwise_conv1d / depthwise_conv2d: a convolution with a group per input channel; the
    kernel [*window, in, multiplier] viewed as [in * multiplier, 1, *window] (output channel
    c * multiplier + m, Keras's order)."""

    def __init__(self, shapes, stride, pads, dilation=None, activation="linear"):
        super().__init__(shapes)
        self.stride, self.pads = tuple(stride), [tuple(p) for p in pads]
        self.dilation = tuple(dilation) if dilation else (1,) * len(self.pads)
        self.activation = activation

    def depthwise(self, x, kernel, bias):
        spatial = len(self.pads)
        weight = kernel.reshape(kernel.shape[:-2] + (-1,)).permute(-1, *range(spatial)).unsqueeze(1)
        xc, pad = window_padding(channels_first(x), self.pads)
        conv = F.conv1d if spatial == 1 else F.conv2d
        return channels_last(conv(xc, weight, bias, self.stride, pad, self.dilation, kernel.shape[-2]))

    def forward(self, x):
        return activate(self.activation, self.depthwise(x, self.kernel, self.bias if self.has("bias") else None))


class SeparableConv(DepthwiseConv):
    """separable_conv1d / separable_conv2d: the depthwise step (no bias), then the pointwise
    kernel [1, (1,) in * multiplier, filters] as a matrix product, and the bias."""

    def forward(self, x):
        h = self.depthwise(x, self.depthwise_kernel, None)
        pw = self.pointwise_kernel
        y = h @ pw.reshape(pw.shape[-2], pw.shape[-1])
        return activate(self.activation, y + self.bias if self.has("bias") else y)


class ConvTranspose(Layer):
    """conv1d_transpose / conv2d_transpose: the full transposed convolution ((n - 1) * stride + k
    long; the kernel [*window, filters, in] viewed as torch's [in, filters, *window]), cropped by
    `crops` (begin, end) per axis or, where Keras's output is longer (k < stride), padded with
    zeros at the end up to `size`; then the bias."""

    def __init__(self, shapes, stride, crops, size, activation="linear"):
        super().__init__(shapes)
        self.stride, self.crops, self.size = tuple(stride), [tuple(c) for c in crops], tuple(size)
        self.activation = activation

    def forward(self, x):
        spatial = len(self.size)
        conv = F.conv_transpose1d if spatial == 1 else F.conv_transpose2d
        y = conv(channels_first(x), self.kernel.permute(-1, -2, *range(spatial)), None, self.stride)
        index, pads = [slice(None), slice(None)], []
        for axis, ((b, e), n) in enumerate(zip(self.crops, self.size)):
            length = y.shape[2 + axis]
            index.append(slice(b, length - e))
            pads.append((0, max(n - (length - b - e), 0)))
        y = y[tuple(index)]
        if any(p for _, p in pads):
            y = F.pad(y, pad_arg(pads))
        y = channels_last(y)
        return activate(self.activation, y + self.bias if self.has("bias") else y)


class MaxPool(Layer):
    """maxpool1d / maxpool2d; `same` pads with -inf."""

    def __init__(self, window, stride, pads):
        super().__init__()
        self.window, self.stride, self.pads = tuple(window), tuple(stride), [tuple(p) for p in pads]

    def forward(self, x):
        xc, pad = window_padding(channels_first(x), self.pads, value=-math.inf)
        pool = F.max_pool1d if len(self.window) == 1 else F.max_pool2d
        return channels_last(pool(xc, self.window, self.stride, pad))


class AvgPool(Layer):
    """avgpool1d / avgpool2d: with `same`, each window divided by its number of unpadded
    elements (window sums of the zero-padded input over per-position counts). `size`: the
    input's spatial shape."""

    def __init__(self, window, stride, pads, size):
        super().__init__()
        self.window, self.stride, self.pads = tuple(window), tuple(stride), [tuple(p) for p in pads]
        out = [(n + b + e - k) // s + 1 for n, k, s, (b, e) in zip(size, self.window, self.stride, self.pads)]
        counts = torch.ones(out, dtype=torch.float64)
        for axis, (n, k, s, (b, _), m) in enumerate(zip(size, self.window, self.stride, self.pads, out)):
            start = torch.arange(m, dtype=torch.float64) * s - b
            c = torch.clamp(start + k, max=n) - torch.clamp(start, min=0)
            shape = [1] * len(out)
            shape[axis] = m
            counts = counts * c.reshape(shape)
        self.register_buffer("counts", counts, persistent=False)

    def forward(self, x):
        xc = channels_first(x)
        window, stride, pads = self.window, self.stride, self.pads
        if len(window) == 1:  # through the 2-D op: avg_pool1d has no divisor_override
            xc = xc.unsqueeze(2)
            window, stride, pads = (1,) + window, (1,) + stride, [(0, 0)] + pads
        if not any(b or e for b, e in pads):
            y = F.avg_pool2d(xc, window, stride)
        else:
            y = F.avg_pool2d(F.pad(xc, pad_arg(pads)), window, stride, divisor_override=1)
            y = y / self.counts.reshape(y.shape[2:]).to(x.dtype)
        if len(self.window) == 1:
            y = y.squeeze(2)
        return channels_last(y)


class GlobalMaxPool(Layer):
    def forward(self, x):
        return x.reshape(x.shape[0], -1, x.shape[-1]).max(dim=1).values


class GlobalAvgPool(Layer):
    def forward(self, x):
        return x.mean(dim=tuple(range(1, x.dim() - 1)))


class Flatten(Layer):
    def forward(self, x):
        return x.reshape(x.shape[0], -1)


class Dense(Layer):
    """x @ kernel + bias on the last axis; the kernel is [in, units] (Keras's layout)."""

    def __init__(self, shapes, activation="linear"):
        super().__init__(shapes)
        self.activation = activation

    def forward(self, x):
        y = F.linear(x, self.kernel.t(), self.bias if self.has("bias") else None)
        return activate(self.activation, y)


class Dropout(Layer):
    """Inverted dropout in training mode (the kept units scaled by 1 / (1 - rate)); the
    identity in eval mode."""

    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or self.rate == 0:
            return x
        return x * self.mask(x.shape, self.rate, x)


class SpatialDropout(Layer):
    """spatial_dropout1d / spatial_dropout2d: whole channels dropped, one draw per sample and
    channel, in training mode."""

    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or self.rate == 0:
            return x
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return x * self.mask(shape, self.rate, x)


class Embedding(Layer):
    """Token ids (int64) to rows of `embeddings` [vocab, dim]."""

    def forward(self, x):
        vocab = self.embeddings.shape[0]
        if x.numel():
            lo, hi = torch.stack(torch.aminmax(x)).tolist()  # one sync with the device
            if lo < 0 or hi >= vocab:
                raise ValueError(f"token ids must be in 0..{vocab - 1}; the input has id {lo if lo < 0 else hi}")
        return F.embedding(x, self.embeddings)


class PositionEmbedding(Layer):
    """Adds a learned vector per position (`embeddings` [max_length, features]) to each step."""

    def forward(self, x):
        return x + self.embeddings[: x.shape[1]]


class Batchnorm(Layer):
    """Each channel (the last axis) by the batch's mean and biased variance in training mode, the
    moving statistics updated as Keras updates them (m <- m * momentum + batch * (1 - momentum));
    by the moving statistics in eval mode. Then gamma and beta where the layer has them.

    `sync` (for DistributedDataParallel, where each process holds a share of the global batch):
    the statistics are the global batch's, summed across the processes by a differentiable
    all-reduce (as torch's SyncBatchNorm), so that N processes compute what one process computes
    on the whole batch."""

    sync = False

    def __init__(self, shapes, momentum, epsilon):
        super().__init__(shapes, buffers=("moving_mean", "moving_variance"))
        self.momentum, self.epsilon = momentum, epsilon

    def forward(self, x):
        axes = tuple(range(x.dim() - 1))
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
                mm, mv, m = self.moving_mean, self.moving_variance, self.momentum
                mm.copy_(mm * m + mean.detach().to(mm.dtype) * (1 - m))
                mv.copy_(mv * m + var.detach().to(mv.dtype) * (1 - m))
        else:
            centered, var = x - self.moving_mean.to(x.dtype), self.moving_variance.to(x.dtype)
        y = centered * torch.rsqrt(var + self.epsilon)
        if self.has("gamma"):
            y = y * self.gamma
        if self.has("beta"):
            y = y + self.beta
        return y


class Layernorm(Layer):
    """Each sample over its last axis; gamma and beta where the layer has them."""

    def __init__(self, shapes, epsilon):
        super().__init__(shapes)
        self.epsilon = epsilon

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.gamma if self.has("gamma") else None,
                            self.beta if self.has("beta") else None, self.epsilon)


class Reshape(Layer):
    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape((x.shape[0],) + self.shape)


class Permute(Layer):
    """`axes`: the input's axes in their new order, 1-based (the batch stays axis 0)."""

    def __init__(self, axes):
        super().__init__()
        self.axes = tuple(axes)

    def forward(self, x):
        return x.permute((0,) + self.axes)


class RepeatVector(Layer):
    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, x):
        return x.unsqueeze(1).expand(x.shape[0], self.n, x.shape[1])


class Upsampling(Layer):
    """upsampling1d / upsampling2d: nearest repeats rows (columns); bilinear is F.interpolate
    with align_corners=False, Keras 3's image resize. `out`: the output's spatial shape."""

    def __init__(self, size, out, interpolation="nearest"):
        super().__init__()
        self.size, self.out, self.interpolation = tuple(size), tuple(out), interpolation

    def forward(self, x):
        if self.interpolation == "bilinear":
            return channels_last(F.interpolate(channels_first(x), size=self.out, mode="bilinear", align_corners=False))
        for axis, s in enumerate(self.size, start=1):
            if s > 1:
                x = x.repeat_interleave(s, dim=axis)
        return x


class ZeroPad(Layer):
    """zeropad1d / zeropad2d: `pads` (begin, end) per spatial axis."""

    def __init__(self, pads):
        super().__init__()
        self.pads = [tuple(p) for p in pads]

    def forward(self, x):
        return F.pad(x, pad_arg([(0, 0)] + self.pads + [(0, 0)]))


class Cropping(Layer):
    """cropping1d / cropping2d: `crops` (begin, end) per spatial axis."""

    def __init__(self, crops):
        super().__init__()
        self.crops = [tuple(c) for c in crops]

    def forward(self, x):
        inner = tuple(slice(b, n - e) for (b, e), n in zip(self.crops, x.shape[1:-1]))
        return x[(slice(None),) + inner]


class Attention(Layer):
    """Keras's MultiHeadAttention as self-attention, mha(x, x): q, k, v projections (kernels
    [features, heads, dim]), q scaled by 1 / sqrt(key_dim), softmax over the keys (causal: key
    s <= query t), dropout on the probabilities in training mode, the output projection
    [heads, value_dim, features]."""

    def __init__(self, shapes, heads, key_dim, value_dim, dropout=0.0, causal=False):
        super().__init__(shapes)
        self.heads, self.key_dim, self.value_dim = heads, key_dim, value_dim
        self.dropout, self.causal = dropout, causal

    def project(self, x, part):
        kernel = getattr(self, part + "__kernel")
        p = x @ kernel.reshape(kernel.shape[0], -1)
        if self.has(part + "__bias"):
            p = p + getattr(self, part + "__bias").reshape(-1)
        n, steps = x.shape[:2]
        return p.reshape(n, steps, self.heads, -1).transpose(1, 2)  # [n, heads, steps, dim]

    def forward(self, x):
        n, steps, features = x.shape
        q = self.project(x, "query") * (1.0 / math.sqrt(self.key_dim))
        k, v = self.project(x, "key"), self.project(x, "value")
        if self.training and self.dropout > 0:
            scores = q @ k.transpose(-1, -2)
            if self.causal:
                keep = torch.ones(steps, steps, dtype=torch.bool, device=x.device).tril()
                scores = scores.masked_fill(~keep, -math.inf)
            probabilities = torch.softmax(scores, dim=-1)
            ctx = (probabilities * self.mask(probabilities.shape, self.dropout, probabilities)) @ v
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=1.0)
        ctx = ctx.transpose(1, 2).reshape(n, steps, self.heads * self.value_dim)
        y = ctx @ self.attention_output__kernel.reshape(-1, features)
        return y + self.attention_output__bias if self.has("attention_output__bias") else y


def split_gates(a, k):
    """The last axis cut into k equal parts (a recurrent layer's gates)."""
    u = a.shape[-1] // k
    return [a[..., g * u : (g + 1) * u] for g in range(k)]


class Recurrent(Layer):
    """rnn, lstm and gru (`kind`) with Keras's options: kernel [features, gates * units],
    recurrent_kernel [units, gates * units], bias (a GRU with reset_after: [2, 3 * units], input
    and recurrent biases), gates in Keras's order (LSTM i, f, c, o; GRU z, r, h). Bidirectional:
    a forward copy and a backward one (weights `forward__*`, `backward__*`), the backward
    output flipped back to the input's order when it returns sequences, then joined by `merge`
    (concat, sum, mul, ave). go_backwards reads from the end. dropout and recurrent_dropout (in
    training mode) hold one mask per sequence, as Keras's.

    With the default activations and no recurrent dropout, torch's fused LSTM/GRU/RNN kernels
    run (Keras's LSTM gates i, f, c, o are torch's i, f, g, o; a reset_after GRU is torch's GRU
    with its gates reordered from z, r, h to r, z, n); otherwise the explicit cells."""

    def __init__(self, kind, shapes, units, return_sequences=False, bidirectional=False, merge="concat",
                 go_backwards=False, dropout=0.0, recurrent_dropout=0.0, activation="tanh",
                 recurrent_activation="sigmoid", reset_after=True):
        super().__init__(shapes)
        self.kind, self.units, self.return_sequences = kind, units, return_sequences
        self.bidirectional, self.merge, self.go_backwards = bidirectional, merge, go_backwards
        self.dropout, self.recurrent_dropout = dropout, recurrent_dropout
        self.activation, self.recurrent_activation, self.reset_after = activation, recurrent_activation, reset_after
        self.gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
        # one mask per gate with recurrent dropout (Keras's LSTM and GRU), else one for all
        self.masks = self.gates if self.gates > 1 and recurrent_dropout > 0 else 1
        u = units  # torch's GRU gate order r, z, n from Keras's z, r, h
        order = torch.cat([torch.arange(u, 2 * u), torch.arange(0, u), torch.arange(2 * u, 3 * u)])
        self.register_buffer("gru_order", order, persistent=False)

    def forward(self, x):
        ys = []
        for prefix in ("forward__", "backward__") if self.bidirectional else ("",):
            mi = mr = None
            if self.training and self.dropout > 0:
                mi = self.mask((x.shape[0], self.masks, x.shape[-1]), self.dropout, x)
            if self.training and self.recurrent_dropout > 0:
                mr = self.mask((x.shape[0], self.masks, self.units), self.recurrent_dropout, x)
            backwards = prefix == "backward__" or self.go_backwards
            ys.append(self.direction(x.flip(1) if backwards else x, prefix, mi, mr))
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

    def fused(self):
        if self.kind == "rnn":
            return self.activation in ("tanh", "relu")
        return (self.activation == "tanh" and self.recurrent_activation == "sigmoid"
                and (self.kind == "lstm" or self.reset_after))

    def direction(self, x, prefix, mi, mr):
        W = getattr(self, prefix + "kernel")
        U = getattr(self, prefix + "recurrent_kernel")
        b = getattr(self, prefix + "bias")
        if self.fused() and mr is None:
            return self.run_fused(x if mi is None else x * mi, W, U, b)
        H = self.cells(x, W, U, b, mi, mr)
        return torch.stack(H, dim=1) if self.return_sequences else H[-1]

    def run_fused(self, x, W, U, b):
        n, u = x.shape[0], self.units
        x = x.contiguous()
        h0 = x.new_zeros(1, n, u)
        train = self.training
        if self.kind == "lstm":
            params = [W.t().contiguous(), U.t().contiguous(), b, torch.zeros_like(b)]
            out, hn, _ = torch.lstm(x, (h0, h0), params, True, 1, 0.0, train, False, True)
        elif self.kind == "gru":
            order = self.gru_order
            params = [W[:, order].t().contiguous(), U[:, order].t().contiguous(), b[0, order], b[1, order]]
            out, hn = torch.gru(x, h0, params, True, 1, 0.0, train, False, True)
        else:
            fn = torch.rnn_tanh if self.activation == "tanh" else torch.rnn_relu
            params = [W.t().contiguous(), U.t().contiguous(), b, torch.zeros_like(b)]
            out, hn = fn(x, h0, params, True, 1, 0.0, train, False, True)
        return out if self.return_sequences else hn[0]

    def inputs(self, x, W, mi):
        """The input projection of every step [n, steps, gates * units]: (x * mask_g) @ W_g."""
        if mi is None:
            return x @ W
        if mi.shape[1] == 1:
            return (x * mi) @ W
        return torch.cat([(x * mi[:, g : g + 1]) @ Wg for g, Wg in enumerate(split_gates(W, self.masks))], dim=-1)

    def recurrent(self, h, U, mr):
        """h @ U, each gate's part with its own recurrent mask where there is one per gate."""
        if mr is None:
            return h @ U
        if mr.shape[1] == 1:
            return (h * mr[:, 0]) @ U
        return torch.cat([(h * mr[:, g]) @ Ug for g, Ug in enumerate(split_gates(U, self.gates))], dim=-1)

    def cells(self, x, W, U, b, mi, mr):
        n, steps = x.shape[:2]
        act, ract = self.activation, self.recurrent_activation
        h = x.new_zeros(n, self.units)
        H = []
        if self.kind == "rnn":
            Z = self.inputs(x, W, mi) + b
            for t in range(steps):
                h = activate(act, Z[:, t] + self.recurrent(h, U, mr) if t else Z[:, t])
                H.append(h)
            return H
        if self.kind == "lstm":
            A = self.inputs(x, W, mi) + b
            c = x.new_zeros(n, self.units)
            for t in range(steps):
                a = A[:, t] + self.recurrent(h, U, mr) if t else A[:, t]
                ai, af, ac, ao = split_gates(a, 4)
                c = activate(ract, af) * c + activate(ract, ai) * activate(act, ac)
                h = activate(ract, ao) * activate(act, c)
                H.append(h)
            return H
        if self.reset_after:  # gru: z, r, h~
            P = self.inputs(x, W, mi) + b[0]
            for t in range(steps):
                pz, pr, ph = split_gates(P[:, t], 3)
                rz, rr, rh = split_gates(self.recurrent(h, U, mr) + b[1], 3)
                z, r = activate(ract, pz + rz), activate(ract, pr + rr)
                h = z * h + (1 - z) * activate(act, ph + r * rh)
                H.append(h)
            return H
        P = self.inputs(x, W, mi) + b
        Uz, Ur, Uh = split_gates(U, 3)
        for t in range(steps):
            pz, pr, ph = split_gates(P[:, t], 3)
            if mr is None:
                hz = hr = hh = h
            elif mr.shape[1] == 1:
                hz = hr = hh = h * mr[:, 0]
            else:
                hz, hr, hh = h * mr[:, 0], h * mr[:, 1], h * mr[:, 2]
            z, r = activate(ract, pz + hz @ Uz), activate(ract, pr + hr @ Ur)
            h = z * h + (1 - z) * activate(act, ph + (r * hh) @ Uh)
            H.append(h)
        return H


# --- merges: how a block joins its branches -------------------------------------------------


def merge_add(xs):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


def merge_average(xs):
    return merge_add(xs) / len(xs)


def merge_subtract(xs):
    return xs[0] - xs[1]


def merge_multiply(xs):
    y = xs[0]
    for x in xs[1:]:
        y = y * x
    return y


def merge_maximum(xs):
    y = xs[0]
    for x in xs[1:]:
        y = torch.maximum(y, x)
    return y


def merge_minimum(xs):
    y = xs[0]
    for x in xs[1:]:
        y = torch.minimum(y, x)
    return y


def merge_concat(xs, axis=-1):
    """Concatenated on `axis` (the batch is axis 0)."""
    return torch.cat(xs, dim=axis)
