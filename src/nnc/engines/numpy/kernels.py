"""NumPy forward and backward for every layer kind, each chain rule beside its forward.

A kernel is a small class built from one checked layer (nnc.lang.model.Layer):

    k = KERNELS[layer.kind](layer)
    y, cache = k.forward(x, w, training, rng)      # w: {"kernel": ..., "bias": ...} (Keras layouts)
    dx, dw = k.backward(dy, w, cache, need_dx)     # dw has the same short names as w

Neither writes into x or dy: a block hands the same arrays to several branches (Network passes
them read-only there, and tests/backend/test_backend_blocks.py runs every kernel so).

Everything is vectorized over the batch: a convolution is one im2col copy (a loop over the
kh*kw window offsets, each a whole-batch slice) and one matrix product; a recurrent layer
projects the inputs of all time steps in long matrix products and loops only over time,
with the weight and input gradients taken as long products too (the LSTM's and GRU's fast
cores make them block by block on another core while their loops run: parallel.Background).
Arrays are kept in the weights' dtype (float32 normally, float64 for gradient checks).

Keras semantics, which these follow exactly: channels-last; conv kernels [kh, kw, in, out];
`same` padding puts the odd pixel at the end (nnc.lang.kinds.same_pads); max pooling pads with
-inf; average pooling with `same` divides by the number of unpadded elements in each window;
LSTM gates i, f, c, o; GRU gates z, r, h with h = z*h_prev + (1-z)*h~; dropout is inverted
(kept units scaled by 1/(1-rate)) and active only in training.
"""

from __future__ import annotations

import math
from itertools import product
from math import prod

import numpy as np

from nnc.engines.numpy import parallel
from nnc.engines.numpy.parallel import BLAS
from nnc.lang.errors import UserError
from nnc.lang.kinds import SELU_ALPHA, SELU_SCALE

# --- activations ------------------------------------------------------------------------------
# Each backward is written in terms of the activation's output y where it can be, so a layer
# caches only y; the few in NEEDS_INPUT (gelu, silu, mish) need the input x as well.


def sigmoid(x: np.ndarray) -> np.ndarray:
    # 0.5*tanh(x/2) + 0.5 is sigmoid exactly, and never overflows the way 1/(1+exp(-x)) does
    y = np.multiply(x, 0.5)
    np.tanh(y, out=y)
    y *= 0.5
    y += 0.5
    return y


def softmax(x: np.ndarray) -> np.ndarray:
    # subtracting the row maximum keeps exp from overflowing; the result is unchanged
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _c(x: np.ndarray, value: float):
    """A constant in x's dtype (float32 stays float32)."""
    return x.dtype.type(value) if x.dtype.kind == "f" else value


_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, to float64 accuracy (math.erf, correctly rounded to
    within an ulp; numpy has none). Only |x| < 6 is computed: beyond, erf is +-1 in float64."""
    x = np.asarray(x)
    out = np.sign(x).astype(np.float64)
    inner = np.abs(x) < 6.0
    if inner.any():
        out[inner] = _erf_scalar(x[inner].astype(np.float64)).astype(np.float64)
    return out.astype(x.dtype) if x.dtype.kind == "f" else out


def softplus(x: np.ndarray) -> np.ndarray:
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow, and exact for large |x|
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def leaky_relu(x: np.ndarray, slope: float) -> np.ndarray:
    return np.where(x > 0, x, x * _c(x, slope))


def elu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, x, _c(x, alpha) * np.expm1(np.minimum(x, 0)))


SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715
NEEDS_INPUT = frozenset({"gelu", "gelu_tanh", "silu", "swish", "mish"})
"""Activations whose derivative needs the input x, not only the output y."""


def activate(name: str, x: np.ndarray) -> np.ndarray:
    """keras.activations.NAME(x) with its defaults (nnc.lang.kinds.ACTIVATIONS)."""
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0)
    if name == "sigmoid":
        return sigmoid(x)
    if name == "tanh":
        return np.tanh(x)
    if name == "softmax":
        return softmax(x)
    if name == "leaky_relu":
        return leaky_relu(x, 0.2)
    if name == "elu":
        return elu(x, 1.0)
    if name == "selu":
        return _c(x, SELU_SCALE) * elu(x, SELU_ALPHA)
    if name == "gelu":  # exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
        return _c(x, 0.5) * x * (1 + erf(x * _c(x, 1 / math.sqrt(2.0))))
    if name == "gelu_tanh":
        return _c(x, 0.5) * x * (1 + np.tanh(_c(x, SQRT_2_OVER_PI) * (x + _c(x, GELU_TANH_C) * x * x * x)))
    if name in ("silu", "swish"):
        return x * sigmoid(x)
    if name == "softplus":
        return softplus(x)
    if name == "softsign":
        return x / (1 + np.abs(x))
    if name == "hard_sigmoid":  # Keras 3: relu6(x + 3) / 6
        return np.clip(x + _c(x, 3.0), 0, 6) / _c(x, 6.0)
    if name == "relu6":
        return np.clip(x, 0, 6)
    if name == "mish":
        return x * np.tanh(softplus(x))
    if name == "log_softmax":
        s = x - x.max(axis=-1, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))
    raise ValueError(f"unknown activation {name!r}")


def activate_backward(name: str, y: np.ndarray, dy: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
    """dL/dx from dL/dy and y = activation(x); the activations in NEEDS_INPUT need x too."""
    if name in NEEDS_INPUT and x is None:
        raise ValueError(f"the derivative of {name} needs its input")
    if name == "linear":
        return dy
    if name == "relu":
        return dy * (y > 0)
    if name == "sigmoid":
        return dy * y * (1 - y)
    if name == "tanh":
        return dy * (1 - y * y)
    if name == "softmax":
        # Jacobian diag(y) - y y^T, applied row by row
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    if name == "leaky_relu":  # y > 0 exactly where x > 0
        return np.where(y > 0, dy, dy * _c(dy, 0.2))
    if name == "elu":  # x <= 0: y = e^x - 1, so dy/dx = y + 1
        return np.where(y > 0, dy, dy * (y + 1))
    if name == "selu":  # x <= 0: dy/dx = scale alpha e^x = y + scale alpha
        return np.where(y > 0, dy * _c(dy, SELU_SCALE), dy * (y + _c(dy, SELU_SCALE * SELU_ALPHA)))
    if name == "gelu":  # Phi(x) + x phi(x), Phi(x) = y / x (0.5 at x = 0)
        nz = x != 0
        cdf = np.where(nz, y / np.where(nz, x, 1), _c(x, 0.5))
        pdf = np.exp(x * x * _c(x, -0.5)) * _c(x, 1 / math.sqrt(2 * math.pi))
        return dy * (cdf + x * pdf)
    if name == "gelu_tanh":
        x2 = x * x
        t = np.tanh(_c(x, SQRT_2_OVER_PI) * (x + _c(x, GELU_TANH_C) * x2 * x))
        du = _c(x, SQRT_2_OVER_PI) * (1 + _c(x, 3 * GELU_TANH_C) * x2)
        return dy * (_c(x, 0.5) * (1 + t) + _c(x, 0.5) * x * (1 - t * t) * du)
    if name in ("silu", "swish"):  # s + x s (1 - s) = s + y (1 - s)
        s = sigmoid(x)
        return dy * (s + y * (1 - s))
    if name == "softplus":  # sigmoid(x) = 1 - e^-y
        return dy * -np.expm1(-y)
    if name == "softsign":  # 1 / (1 + |x|)^2 = (1 - |y|)^2
        return dy * np.square(1 - np.abs(y))
    if name == "hard_sigmoid":
        return dy * ((y > 0) & (y < 1)) / _c(dy, 6.0)
    if name == "relu6":
        return dy * ((y > 0) & (y < 6))
    if name == "mish":  # tanh(sp) + x (1 - tanh(sp)^2) sigmoid(x)
        t = np.tanh(softplus(x))
        return dy * (t + x * (1 - t * t) * sigmoid(x))
    if name == "log_softmax":  # dy - softmax(x) * sum(dy)
        return dy - np.exp(y) * dy.sum(axis=-1, keepdims=True)
    raise ValueError(f"unknown activation {name!r}")


class Activation:
    """Every activation as a layer (relu, gelu, log_softmax, ...: nnc.lang.kinds.ACTIVATIONS), and the
    activation option of dense and conv layers (Network runs it as a step of its own, so that a
    final softmax/sigmoid can be left to the loss). Caches y, and x where the derivative needs it."""

    def __init__(self, layer=None, name: str | None = None):
        self.name = name if name is not None else layer.kind

    def forward(self, x, w, training=False, rng=None):
        y = activate(self.name, x)
        return y, ((x, y) if self.name in NEEDS_INPUT else y)

    def backward(self, dy, w, cache, need_dx=True):
        if self.name in NEEDS_INPUT:
            x, y = cache
            return activate_backward(self.name, y, dy, x), {}
        return activate_backward(self.name, cache, dy), {}


# --- windows: shared by convolutions and pools ------------------------------------------------


def _window_slices(offset, strides, out):
    """The slice of the padded input that window position `offset` sees for every output pixel."""
    return (slice(None),) + tuple(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, strides, out)) + (
        slice(None),
    )


class _Windowed:
    def __init__(self, layer):
        spec = layer.spec
        self.window = tuple(spec.window(layer.options))
        self.strides = tuple(spec.strides(layer.options))
        self.spatial_in = tuple(layer.input_shape[:-1])
        self.out = tuple(layer.output_shape[:-1])
        self.pads = spec.pads(layer.options, layer.input_shape)
        self.padded = any(p != (0, 0) for p in self.pads)
        self.offsets = list(product(*(range(k) for k in self.window)))
        # dilated convolutions: tap `off` of the window reads the input at off * dilation
        self.dilation = tuple(spec.dilations(layer.options))
        self.dilated = any(d > 1 for d in self.dilation)
        self.starts = [tuple(o * d for o, d in zip(off, self.dilation)) for off in self.offsets]

    def pad(self, x, value=0.0):
        if not self.padded:
            return x
        return np.pad(x, [(0, 0)] + list(self.pads) + [(0, 0)], constant_values=value)

    def unpad(self, dxp):
        if not self.padded:
            return dxp
        return dxp[(slice(None),) + tuple(slice(b, b + n) for (b, _), n in zip(self.pads, self.spatial_in))]

    def padded_shape(self, n, c):
        return (n,) + tuple(s + b + e for s, (b, e) in zip(self.spatial_in, self.pads)) + (c,)


class Conv(_Windowed):
    """conv1d and conv2d: im2col and one matrix product with the kernel viewed as
    [kh*kw*in, filters]. With a bias, the columns end in a column of ones and the bias rides in
    the product as the kernel's last row: no separate pass to add it or to sum its gradient.
    dilation: im2col reads tap `off` at off * dilation (kinds' pads cover the dilated window;
    causal padding is all at the begin). groups > 1: the columns regrouped per group and one
    batched product [groups, rows, window*in/groups] @ [groups, window*in/groups, filters/groups]."""

    def __init__(self, layer):
        super().__init__(layer)
        self.filters = layer.options["filters"]
        self.use_bias = layer.options["use_bias"]
        self.groups = layer.options.get("groups", 1)

    def im2col(self, x):
        """[n*prod(out), prod(window)*in (+1 for the bias)], rows in Keras's kernel order."""
        xp = np.ascontiguousarray(self.pad(x))
        n, c = x.shape[0], x.shape[-1]
        k = prod(self.window) * c
        cols = np.empty((n,) + self.out + (k + self.use_bias,), dtype=x.dtype)
        if self.use_bias:
            cols[..., k] = 1
        body = cols[..., :k]
        if self.window[-1] * c >= 16 and self.dilation[-1] == 1:
            # one copy from a strided view: along the last spatial axis a window's elements and
            # their channels are contiguous in memory (kw*in values), so the view is
            # [n, *out, *window[:-1], kw*in] and the copy moves long contiguous runs
            st = xp.strides
            d = len(self.out)
            shape = (n,) + self.out + self.window[:-1] + (self.window[-1] * c,)
            strides = ((st[0],) + tuple(st[1 + a] * self.strides[a] for a in range(d))
                       + tuple(st[1 + a] * self.dilation[a] for a in range(d - 1)) + (st[-1],))
            view = np.lib.stride_tricks.as_strided(xp, shape, strides, writeable=False)
            np.copyto(np.reshape(body, shape, copy=False), view)
        else:
            # few channels: one copy per window offset, each over the whole batch, into
            # blocks[n, *out, *window, c] (the row order of the Keras kernel [*window, in, out])
            blocks = np.reshape(body, (n,) + self.out + self.window + (c,), copy=False)
            lead = (slice(None),) * (1 + len(self.out))
            for off, start in zip(self.offsets, self.starts):
                blocks[lead + off] = xp[_window_slices(start, self.strides, self.out)]
        return cols.reshape(n * prod(self.out), -1)

    def _matrix(self, w):
        kernel = w["kernel"].reshape(-1, self.filters)
        return np.concatenate([kernel, w["bias"][None]]) if self.use_bias else kernel

    def forward(self, x, w, training=False, rng=None):
        cols = self.im2col(x)
        if self.groups > 1:
            cols = self._group_cols(cols, x.shape[-1])
            y = np.matmul(cols, self._group_kernel(w["kernel"]))  # [groups, rows, filters/groups]
            y = y.transpose(1, 0, 2).reshape(-1, self.filters)
            if self.use_bias:
                y += w["bias"]
        else:
            y = cols @ self._matrix(w)
        return y.reshape((x.shape[0],) + self.out + (self.filters,)), (cols, x.shape)

    def _group_cols(self, cols, c):
        """groups > 1: im2col's columns [rows, window*in] (+ the ones column, dropped) regrouped
        as [groups, rows, window*in/groups], each group's columns in its kernel's row order."""
        g = self.groups
        body = cols[:, : prod(self.window) * c].reshape(cols.shape[0], prod(self.window), g, c // g)
        return np.ascontiguousarray(body.transpose(2, 0, 1, 3)).reshape(g, cols.shape[0], -1)

    def _group_kernel(self, kernel):
        """[*window, in/groups, filters] as [groups, window*in/groups, filters/groups]: output
        channel f belongs to group f // (filters/groups), which reads input channels
        g*in/groups .. (g+1)*in/groups - 1 (Keras's, TensorFlow's and PyTorch's grouping)."""
        g = self.groups
        k = kernel.reshape(-1, g, self.filters // g)  # rows (window, in/groups)
        return k.transpose(1, 0, 2)

    def _group_backward(self, dy, w, cache, need_dx):
        cols, xshape = cache  # cols: [groups, rows, window*in/groups]
        g, kernel = self.groups, w["kernel"]
        dyg = dy.reshape(-1, g, self.filters // g).transpose(1, 0, 2)  # [groups, rows, filters/groups]
        gk = np.matmul(cols.transpose(0, 2, 1), dyg)  # [groups, window*in/groups, filters/groups]
        grads = {"kernel": gk.reshape(g, -1, self.filters // g).transpose(1, 0, 2).reshape(kernel.shape)}
        if self.use_bias:
            grads["bias"] = dy.reshape(-1, self.filters).sum(axis=0)
        if not need_dx:
            return None, grads
        n, c = xshape[0], xshape[-1]
        dcols = np.matmul(dyg, self._group_kernel(kernel).transpose(0, 2, 1))  # [groups, rows, window*in/groups]
        dcols = dcols.reshape(g, -1, prod(self.window), c // g).transpose(1, 2, 0, 3).reshape(-1, prod(self.window) * c)
        return self.unpad(self.col2im(dcols, n, c)), grads

    def backward(self, dy, w, cache, need_dx=True):
        if self.groups > 1:
            return self._group_backward(dy, w, cache, need_dx)
        cols, xshape = cache
        kernel = w["kernel"]
        dy2 = dy.reshape(-1, self.filters)
        g = cols.T @ dy2
        grads = {"kernel": g[: cols.shape[1] - self.use_bias].reshape(kernel.shape)}
        if self.use_bias:
            grads["bias"] = g[-1].copy()
        if not need_dx:
            return None, grads
        n, c = xshape[0], xshape[-1]
        dcols = dy2 @ kernel.reshape(-1, self.filters).T
        return self.unpad(self.col2im(dcols, n, c)), grads

    def col2im(self, dcols, n, c):
        """Add every column back where im2col read it from. Windows overlap, so one addition
        cannot do it; but along the last spatial axis, windows g = ceil(kw/stride) apart do not
        overlap, and each of their kw*in values is contiguous: so one addition per offset of the
        other axes and per residue r mod g, each moving runs of kw*in values."""
        dxp = np.zeros(self.padded_shape(n, c), dtype=dcols.dtype)
        if self.dilated:  # dilated taps: one addition per window offset, each over the whole batch
            dc = dcols.reshape((n,) + self.out + self.window + (c,))
            lead = (slice(None),) * (1 + len(self.out))
            for off, start in zip(self.offsets, self.starts):
                dxp[_window_slices(start, self.strides, self.out)] += dc[lead + off]
            return dxp
        d = len(self.out)
        kw, sw, wo = self.window[-1], self.strides[-1], self.out[-1]
        g = -(-kw // sw)
        dc = dcols.reshape((n,) + self.out + self.window[:-1] + (kw * c,))
        st = dxp.strides
        for lead in product(*(range(k) for k in self.window[:-1])):
            for r in range(min(g, wo)):
                count = len(range(r, wo, g))
                base = dxp[(slice(None),) + tuple(slice(o, None) for o in lead) + (slice(r * sw, None), slice(None))]
                shape = (n,) + self.out[:-1] + (count, kw * c)
                strides = ((st[0],) + tuple(st[1 + a] * self.strides[a] for a in range(d - 1))
                           + (st[d] * sw * g, st[-1]))
                view = np.lib.stride_tricks.as_strided(base, shape, strides)
                view += dc[(slice(None),) * d + (slice(r, None, g),) + lead]
        return dxp


class MaxPool(_Windowed):
    """maxpool1d/2d: a running maximum over the window offsets. The gradient goes to the first
    maximum of each window (TensorFlow and PyTorch do the same), found again in backward by
    comparing each offset with the maximum. `same` pads with -inf."""

    def forward(self, x, w, training=False, rng=None):
        xp = self.pad(x, -np.inf)
        y = None
        for off in self.offsets:
            s = xp[_window_slices(off, self.strides, self.out)]
            if y is None:
                y = s.copy()
            else:
                np.maximum(y, s, out=y)
        return y, (xp, y)

    def backward(self, dy, w, cache, need_dx=True):
        xp, y = cache
        if self.strides == self.window:
            return self.unpad(self._tiled_backward(xp, y, dy)), {}
        dxp = np.zeros(xp.shape, dtype=dy.dtype)
        overlap = any(s < k for s, k in zip(self.strides, self.window))
        taken = None  # windows whose maximum an earlier offset already had
        for off in self.offsets:
            sl = _window_slices(off, self.strides, self.out)
            first = np.equal(xp[sl], y)
            if taken is None:
                taken = first.copy()
            else:
                np.greater(first, taken, out=first)  # first & ~taken
                taken |= first
            if overlap:
                np.add(dxp[sl], dy, out=dxp[sl], where=first)
            else:  # each input element is in one window only: a masked copy suffices
                np.copyto(dxp[sl], dy, where=first)
        return self.unpad(dxp), {}

    def _tiled_backward(self, xp, y, dy):
        """Windows that tile the input (stride == pool, the usual case): view the input as
        [n, o1, k1, o2, k2, c] blocks and compare every element with its window's maximum in one
        operation; ties (flat regions) are then settled for the first offset."""
        n, c = xp.shape[0], xp.shape[-1]
        blocks = tuple(x for o, k in zip(self.out, self.window) for x in (o, k))
        expand = (n,) + tuple(x for o in self.out for x in (o, 1)) + (c,)
        crop = (slice(None),) + tuple(slice(0, o * k) for o, k in zip(self.out, self.window))
        xr = xp[crop].reshape((n,) + blocks + (c,))
        eq = xr == y.reshape(expand)
        if np.count_nonzero(eq) > y.size:  # some window has its maximum twice
            taken = None
            for off in self.offsets:
                v = eq[(slice(None),) + tuple(x for o in off for x in (slice(None), o))]
                if taken is None:
                    taken = v.copy()
                else:
                    np.greater(v, taken, out=v)
                    taken |= v
        dblocks = np.multiply(eq, dy.reshape(expand), dtype=dy.dtype)
        if all(o * k == s for o, k, s in zip(self.out, self.window, xp.shape[1:-1])):
            return dblocks.reshape(xp.shape)  # the windows cover the whole input
        dxp = np.zeros(xp.shape, dtype=dy.dtype)
        dxp[crop] = dblocks.reshape(xp[crop].shape)
        return dxp


class AvgPool(_Windowed):
    """avgpool1d/2d. With `same`, each window is divided by its number of unpadded elements
    (Keras/TensorFlow; PyTorch's count_include_pad=False)."""

    def __init__(self, layer):
        super().__init__(layer)
        # the unpadded part of a window is a box, so its size is a product of one count per axis
        counts = np.ones(self.out, dtype=np.float64)
        for axis, (size, k, s, (b, _), n) in enumerate(zip(self.spatial_in, self.window, self.strides, self.pads, self.out)):
            start = np.arange(n) * s - b
            c = np.minimum(start + k, size) - np.maximum(start, 0)
            shape = [1] * len(self.out)
            shape[axis] = n
            counts = counts * c.reshape(shape)
        self.counts = counts[..., None]  # broadcast over channels

    def forward(self, x, w, training=False, rng=None):
        xp = self.pad(x)
        y = np.zeros((x.shape[0],) + self.out + (x.shape[-1],), dtype=x.dtype)
        for off in self.offsets:
            y += xp[_window_slices(off, self.strides, self.out)]
        y /= self.counts.astype(x.dtype)
        return y, x.shape

    def backward(self, dy, w, cache, need_dx=True):
        xshape = cache
        g = dy / self.counts.astype(dy.dtype)
        dxp = np.zeros(self.padded_shape(xshape[0], xshape[-1]), dtype=dy.dtype)
        for off in self.offsets:
            dxp[_window_slices(off, self.strides, self.out)] += g
        return self.unpad(dxp), {}


class GlobalMaxPool:
    """globalmaxpool over all spatial axes (1-D or 2-D inputs); gradient to the first maximum."""

    def __init__(self, layer):
        pass

    def forward(self, x, w, training=False, rng=None):
        xr = x.reshape(x.shape[0], -1, x.shape[-1])
        arg = xr.argmax(axis=1)[:, None, :]
        return np.take_along_axis(xr, arg, axis=1)[:, 0, :], (arg, x.shape)

    def backward(self, dy, w, cache, need_dx=True):
        arg, xshape = cache
        dx = np.zeros((xshape[0], prod(xshape[1:-1]), xshape[-1]), dtype=dy.dtype)
        np.put_along_axis(dx, arg, dy[:, None, :], axis=1)
        return dx.reshape(xshape), {}


class GlobalAvgPool:
    """globalavgpool over all spatial axes (1-D or 2-D inputs)."""

    def __init__(self, layer):
        pass

    def forward(self, x, w, training=False, rng=None):
        return x.mean(axis=tuple(range(1, x.ndim - 1))), x.shape

    def backward(self, dy, w, cache, need_dx=True):
        xshape = cache
        size = prod(xshape[1:-1])
        dx = np.broadcast_to((dy / size)[:, None, :], (xshape[0], size, xshape[-1]))
        return dx.reshape(xshape), {}


# --- dense stack ------------------------------------------------------------------------------


class Flatten:
    """Keras flattens channels-last arrays in row-major order: exactly numpy's reshape."""

    def __init__(self, layer):
        pass

    def forward(self, x, w, training=False, rng=None):
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, dy, w, cache, need_dx=True):
        return dy.reshape(cache), {}


class Dense:
    """dense on the last axis of an input of any rank: one matrix product on [-1, in]."""

    def __init__(self, layer):
        self.use_bias = layer.options["use_bias"]

    def forward(self, x, w, training=False, rng=None):
        kernel = w["kernel"]
        x2 = x.reshape(-1, kernel.shape[0])
        y = x2 @ kernel
        if self.use_bias:
            y += w["bias"]
        return y.reshape(x.shape[:-1] + (kernel.shape[1],)), (x2, x.shape)

    def backward(self, dy, w, cache, need_dx=True):
        x2, xshape = cache
        kernel = w["kernel"]
        dy2 = dy.reshape(-1, kernel.shape[1])
        grads = {"kernel": x2.T @ dy2}
        if self.use_bias:
            grads["bias"] = dy2.sum(axis=0)
        dx = (dy2 @ kernel.T).reshape(xshape) if need_dx else None
        return dx, grads


class Dropout:
    """Inverted dropout: in training each unit is kept with probability 1-rate and scaled by
    1/(1-rate), so inference is the identity."""

    def __init__(self, layer):
        self.rate = float(layer.options["rate"])
        self.input_shape = tuple(layer.input_shape)

    def draws(self, n):
        """The uniform draws a training batch of n needs (Network takes them before chunking)."""
        return [(n,) + self.input_shape] if self.rate > 0 else []

    def forward(self, x, w, training=False, rng=None):
        if not training or self.rate == 0.0:
            return x, None
        if rng is None:
            raise ValueError("dropout in training needs an rng (numpy.random.Generator)")
        keep = rng.random(x.shape, dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float64) >= self.rate
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * mask, mask

    def backward(self, dy, w, cache, need_dx=True):
        return (dy if cache is None else dy * cache), {}


# --- sequences --------------------------------------------------------------------------------


class Embedding:
    """A gather of rows; its gradient is a scatter-add, done as one np.bincount per output
    column (np.add.at is an order of magnitude slower)."""

    def __init__(self, layer):
        self.name = layer.name
        self.vocab = layer.weights["embeddings"][0]

    def forward(self, x, w, training=False, rng=None):
        ids = np.asarray(x)
        if not np.issubdtype(ids.dtype, np.integer):
            if not np.all(np.mod(ids, 1) == 0):
                raise UserError(f"layer '{self.name}' (embedding) reads token ids, but the input has non-integer values")
            ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab):
            bad = ids.min() if ids.min() < 0 else ids.max()
            raise UserError(f"layer '{self.name}' (embedding) has vocab={self.vocab}, so token ids must be in "
                            f"0..{self.vocab - 1}; the input has id {int(bad)}")
        return w["embeddings"][ids], ids

    def backward(self, dy, w, cache, need_dx=True):
        # visit dy in its memory order (a recurrent layer hands back a transposed view), taking
        # the ids in the same order, rather than copying dy into batch order
        lead = sorted(range(dy.ndim - 1), key=lambda a: -dy.strides[a])
        ids = cache.transpose(lead).reshape(-1)
        dy2 = dy.transpose(lead + [dy.ndim - 1]).reshape(ids.size, -1)
        table = w["embeddings"]
        grad = np.empty_like(table)
        for j in range(table.shape[1]):
            grad[:, j] = np.bincount(ids, weights=dy2[:, j], minlength=self.vocab)
        return None, {"embeddings": grad}


class _Recurrent:
    """Shared by rnn, lstm, gru: inputs are made time-major ([T, N, D]) so that each step reads
    and writes contiguous blocks; the input projection of all steps is one matrix product."""

    def __init__(self, layer):
        self.units = layer.options["units"]
        self.return_sequences = layer.options["return_sequences"]

    @staticmethod
    def time_major(x):
        return np.ascontiguousarray(x.transpose(1, 0, 2))

    @staticmethod
    def block_size(T: int) -> int:
        """Steps per block handed to the helper core (parallel.Background): about 16 blocks."""
        return -(-T // 16)

    def start_projections(self, helper, x, Wt, out):
        """Hand the helper the input projection of every block of steps, in order: out[t] =
        Wt @ xT[t], where xT [T, D+1, N] holds step t of x transposed and a row of ones (the
        bias rides in Wt's last column). Returns xT (filled block by block: the loop waits for
        block k with helper.wait(k + 1)) and the block size."""
        N, T, D = x.shape
        xT = np.empty((T, D + 1, N), dtype=out.dtype)
        block = self.block_size(T)

        def project(t0, t1):
            xb = xT[t0:t1]
            xb[:, :D] = x[:, t0:t1].transpose(1, 2, 0)
            xb[:, D] = 1
            np.matmul(Wt, xb, out=out[t0:t1])

        for t0 in range(0, T, block):
            helper.submit(project, t0, min(t0 + block, T))
        return xT, block

    def output(self, H):
        """H: [T+1, N, u] with H[0] the initial zeros."""
        return H[1:].transpose(1, 0, 2).copy() if self.return_sequences else H[-1].copy()

    def dh_steps(self, dy, T):
        """dL/dh_t from the layer's output, time-major [T, N, u] (zeros but the last without sequences)."""
        if self.return_sequences:
            return self.time_major(dy)
        d = np.zeros((T,) + dy.shape, dtype=dy.dtype)
        d[-1] = dy
        return d

    @staticmethod
    def input_grads(xt, dA, w, need_dx):
        """Gradients of the input projection xt @ kernel (+ bias) from dA [T, N, G]: one product
        each. The input gradient is made feature-major ([D, (step, sample)], returned as an
        [N, T, D] view): an embedding's backward reads each feature's values contiguously."""
        T, N, D = xt.shape
        dA2 = dA.reshape(T * N, -1)
        dkernel = xt.reshape(T * N, D).T @ dA2
        dx = (w["kernel"] @ dA2.T).reshape(D, T, N).transpose(2, 1, 0) if need_dx else None
        return dkernel, dx


class _RnnCore(_Recurrent):
    """SimpleRNN, one direction: h_t = act((x_t * m) W + b + (h_{t-1} * mr) U), with Keras's
    dropout masks m [N, 1, D] and mr [N, 1, u] (training only; None for none), the same at
    every step. The layer kernel is Rnn (below)."""

    def __init__(self, layer):
        super().__init__(layer)
        self.activation = layer.options["activation"]

    def forward(self, x, w, training=False, masks=(None, None)):
        mi, mr = masks
        xt = self.time_major(x if mi is None else x * mi)  # mi broadcasts over the steps
        T, N, D = xt.shape
        u = self.units
        Z = (xt.reshape(T * N, D) @ w["kernel"] + w["bias"]).reshape(T, N, u)
        U = w["recurrent_kernel"]
        H = np.zeros((T + 1, N, u), dtype=Z.dtype)
        with BLAS.one_thread():  # the per-step products are too small to share
            for t in range(T):
                # Z becomes the pre-activations (gelu, silu, mish need them in backward)
                Z[t] += (H[t] if mr is None else H[t] * mr[:, 0]) @ U
                H[t + 1] = activate(self.activation, Z[t])
        return self.output(H), (xt, H, Z if self.activation in NEEDS_INPUT else None, mi, mr)

    def backward(self, dy, w, cache, need_dx=True):
        xt, H, Z, mi, mr = cache
        T = xt.shape[0]
        dH = self.dh_steps(dy, T)
        U_T = w["recurrent_kernel"].T
        dA = np.empty_like(dH)
        dh = np.zeros_like(dH[0])
        with BLAS.one_thread():  # the per-step products are too small to share
            for t in range(T - 1, -1, -1):
                dh += dH[t]
                dA[t] = activate_backward(self.activation, H[t + 1], dh, None if Z is None else Z[t])
                dh = dA[t] @ U_T
                if mr is not None:
                    dh *= mr[:, 0]
        u = self.units
        dkernel, dx = self.input_grads(xt, dA, w, need_dx)
        Hp = H[:-1] if mr is None else H[:-1] * mr[:, 0]
        grads = {
            "kernel": dkernel,
            "recurrent_kernel": Hp.reshape(-1, u).T @ dA.reshape(-1, u),
            "bias": dA.sum(axis=(0, 1)),
        }
        if dx is not None and mi is not None:
            dx = dx * mi
        return dx, grads


class _LstmFast(_Recurrent):
    """LSTM, one direction, the default activations (the layer kernel is Lstm, below): Keras gate order i, f, c, o, recurrent activation sigmoid, activation tanh:
        i, f, o = sigmoid(a_i, a_f, a_o);  g = tanh(a_c)
        c_t = f*c_{t-1} + i*g;  h_t = o*tanh(c_t)
    Laid out for speed, not for reading like Keras: states are kept transposed ([units, batch])
    and the gates reordered to o, i, f, g, so that every gate is a contiguous block of rows
    (numpy is several times slower on column slices), the sigmoid gates are one block, and the
    three gates that scale dc in backward are another. One exp per step computes all four:
    sigmoid(a) = 1/(1 + exp(-a)) and tanh(a) = 2*sigmoid(2a) - 1, so the o, i, f rows of the
    weights are negated and the g rows multiplied by -2 (both exact in binary) for the forward
    pass. (numpy's float32 exp costs about two thirds of its tanh, and the sigmoid rows need no
    affine fix after it.) The input carries a row of ones, so the bias rides in the input
    projection and its gradient in the kernel's."""

    def _order(self):
        u = self.units  # internal row k holds Keras gate column order[k]
        return np.r_[3 * u : 4 * u, 0 : 2 * u, 2 * u : 3 * u]

    def _rows(self, dt, sigmoid_rows, g_rows):
        """A factor per internal row: one value for the o, i, f rows, another for g."""
        r = np.full(4 * self.units, sigmoid_rows, dtype=dt)
        r[3 * self.units :] = g_rows
        return r

    def forward(self, x, w, training=False, rng=None):
        N, T, D = x.shape
        u = self.units
        dt = w["kernel"].dtype
        order = self._order()
        scale = self._rows(dt, -1, -2)  # exp(-a) for the sigmoid rows, exp(-2a) for g
        Wb = np.concatenate([w["kernel"][:, order], w["bias"][order][None]]) * scale  # [D+1, 4u]
        Wt = np.ascontiguousarray(Wb.T)
        Ut = np.ascontiguousarray((w["recurrent_kernel"][:, order] * scale).T)  # [4u, u]
        S = np.empty((T, 4 * u, N), dtype=dt)  # the input projections, then the gate values
        H = np.zeros((T + 1, u, N), dtype=dt)
        C = np.zeros((T + 1, u, N), dtype=dt)
        TC = np.empty((T, u, N), dtype=dt)
        rec = np.empty((4 * u, N), dtype=dt)
        ig = np.empty((u, N), dtype=dt)
        P = np.empty_like(S) if training else None
        Q = np.empty_like(TC) if training else None

        def factors(t0, t1):  # backward's factors of a block of finished steps
            self._factors(S[t0:t1], C[t0:t1], TC[t0:t1], u, P[t0:t1], Q[t0:t1])

        # Another core projects the inputs a block of steps ahead of the loop and, in training,
        # computes backward's factors a block behind it; the loop keeps only the recurrence.
        # (With one core the same tasks run in this thread: results do not depend on it.)
        with parallel.Background() as helper:
            xT, block = self.start_projections(helper, x, Wt, S)
            # exp overflows to inf for gates far in saturation, and 1/(1 + inf) is the exact 0
            with BLAS.one_thread(), np.errstate(over="ignore"):  # the per-step products are too small to share
                for t in range(T):
                    if t % block == 0:
                        helper.wait(t // block + 1)
                    a = S[t]  # becomes the gate values o, i, f (sigmoid) and g (tanh)
                    np.matmul(Ut, H[t], out=rec)
                    a += rec
                    np.exp(a, out=a)
                    a += 1
                    np.reciprocal(a, out=a)  # sigmoid: of a for o, i, f, of 2a for g
                    g = a[3 * u :]
                    g *= 2
                    g -= 1  # tanh(a_c) = 2 sigmoid(2 a_c) - 1
                    c = C[t + 1]
                    np.multiply(a[2 * u : 3 * u], C[t], out=c)  # f * c_{t-1}
                    np.multiply(a[u : 2 * u], g, out=ig)  # i * g
                    c += ig
                    np.tanh(c, out=TC[t])
                    np.multiply(a[:u], TC[t], out=H[t + 1])  # o * tanh(c)
                    if training and ((t + 1) % block == 0 or t == T - 1):
                        helper.submit(factors, t - t % block, t + 1)
            helper.results()
        y = H[1:].transpose(2, 0, 1).copy() if self.return_sequences else H[-1].T.copy()
        return y, (xT, H, C, TC, S, (P, Q) if training else None)

    @staticmethod
    def _factors(S, Cprev, TC, u, P, Q):
        """The factors that turn the carries (dh, dc) into gate pre-activation gradients, into
        P and Q, for a block of steps at once (in training, forward makes them block by block).
        S: gate values [steps, 4u, N]; Cprev: c_{t-1} [steps, u, N]; TC: tanh(c_t).
        The g rows of P carry a factor 1/4, as the forward's do: (1-g^2)/4 = s(1-s) of 2a."""
        o, i, g = S[:, :u], S[:, u : 2 * u], S[:, 3 * u :]
        ps = P[:, : 3 * u]
        np.subtract(1, S[:, : 3 * u], out=ps)
        ps *= S[:, : 3 * u]  # s(1-s) for o, i, f
        P[:, :u] *= TC  # dA_o = dh * tanh(c) * o(1-o)
        P[:, u : 2 * u] *= g  # dA_i = dc * g * i(1-i)
        P[:, 2 * u : 3 * u] *= Cprev  # dA_f = dc * c_{t-1} * f(1-f)
        pg = P[:, 3 * u :]
        np.multiply(g, g, out=pg)
        np.subtract(1, pg, out=pg)
        pg *= 0.25
        pg *= i  # dA_g = dc * i * (1-g^2) / 4
        np.multiply(TC, TC, out=Q)
        np.subtract(1, Q, out=Q)
        Q *= o  # dc += dh * o * (1 - tanh(c)^2)

    def backward(self, dy, w, cache, need_dx=True):
        xT, H, C, TC, S, factors = cache
        T, D1, N = xT.shape
        D = D1 - 1
        u = self.units
        order = self._order()
        if factors is None:  # the forward ran outside training: all steps at once now
            factors = (np.empty_like(S), np.empty_like(TC))
            self._factors(S, C[:-1], TC, u, *factors)
        P, Q = factors
        f = S[:, 2 * u : 3 * u]
        # dA below is 1/4 of the true gradient in the g rows (P's factor 1/4): every product
        # that reads dA takes the 4 in its other operand or its result
        undo = self._rows(S.dtype, 1, 4)
        U = np.ascontiguousarray(w["recurrent_kernel"][:, order] * undo)  # [u, 4u]
        # dA is gate-major, [4u, T, N]: each step writes rows of N values, and a block of steps
        # is a free [4u, (step, sample)] view, whose weight and input gradients are one matrix
        # product each
        dA = np.empty((4 * u, T, N), dtype=S.dtype)
        dA2 = dA.reshape(4 * u, T * N)
        if self.return_sequences:
            dHs = np.ascontiguousarray(dy.transpose(1, 2, 0))  # [T, u, N]
            dh = np.zeros((u, N), dtype=S.dtype)
        else:
            dh = np.ascontiguousarray(dy.T)
        dc = np.zeros((u, N), dtype=S.dtype)
        tmp = np.empty((u, N), dtype=S.dtype)
        P4 = P.reshape(T, 4, u, N)  # views made once: a reshape per step costs more than its multiply
        dA4 = dA.reshape(4, u, T, N)
        # the input gradient transposed, [D, (step, sample)]: each feature's values contiguous,
        # as the embedding's backward reads them (one bincount per feature)
        Wp = (w["kernel"][:, order] * undo).astype(S.dtype, copy=False)  # [D, 4u]
        dxT = np.empty((D, T * N), dtype=S.dtype) if need_dx else None

        def products(t0, t1):
            """A block of finished steps: the weight gradients (kernel, bias and recurrent
            kernel in one product; the operand stacks the input, the ones row and h_{t-1},
            each [rows, (step, sample)]) and the input gradient."""
            cols = slice(t0 * N, t1 * N)
            xh = np.empty((D1 + u, t1 - t0, N), dtype=S.dtype)
            xh[:D1] = xT[t0:t1].transpose(1, 0, 2)
            xh[D1:] = H[t0:t1].transpose(1, 0, 2)
            if need_dx:
                np.matmul(Wp, dA2[:, cols], out=dxT[:, cols])
            return dA2[:, cols] @ xh.reshape(D1 + u, -1).T  # [4u, D+1+u]

        # while the loop runs on, another core takes each block of steps as soon as it is done
        # (the same blocks, in the same order, with one core: the sums do not depend on it)
        block = self.block_size(T)
        with parallel.Background() as helper:
            with BLAS.one_thread():  # the per-step products are too small to share
                for t in range(T - 1, -1, -1):
                    if self.return_sequences:
                        dh += dHs[t]
                    np.multiply(dh, Q[t], out=tmp)
                    dc += tmp
                    np.multiply(P4[t, 0], dh, out=dA4[0, :, t])  # o
                    np.multiply(P4[t, 1:], dc, out=dA4[1:, :, t])  # i, f, g
                    dc *= f[t]
                    dh = U @ dA[:, t]
                    if t % block == 0:
                        helper.submit(products, t, min(t + block, T))
            G = sum(helper.results())
        G *= undo[:, None]
        grads = {"kernel": np.empty_like(w["kernel"]), "recurrent_kernel": np.empty_like(w["recurrent_kernel"]),
                 "bias": np.empty_like(w["bias"])}
        grads["kernel"][:, order] = G[:, :D].T
        grads["bias"][order] = G[:, D]
        grads["recurrent_kernel"][:, order] = G[:, D1:].T
        dx = dxT.reshape(D, T, N).transpose(2, 1, 0) if need_dx else None
        return dx, grads


class _GruFast(_Recurrent):
    """GRU, one direction, the default activations (the layer kernel is Gru, below): Keras gate order z, r, h, recurrent activation sigmoid, activation tanh,
    h_t = z*h_{t-1} + (1-z)*h~.
    reset_after=True (Keras 3's default): bias [2, 3u], row 0 for the input, row 1 for the
        recurrent projection; h~ = tanh(x Wh + b_in_h + r * (h Wrh + b_rec_h)).
    reset_after=False: bias [3u]; h~ = tanh(x Wh + (r*h) Wrh + b_h).
    As in the LSTM, states are transposed ([units, batch]) so each gate is a contiguous block,
    the sigmoid gates are 1/(1 + exp(-a)) with the z and r rows of the weights negated (exact),
    and another core (parallel.Background) projects the inputs a block of steps ahead of the
    forward loop, computes backward's factors a block behind it, and makes each finished block's
    weight and input gradients behind the backward loop. Given the forward, dL/dh_{t-1} is
    linear in dL/dh_t, so the backward loop is a product and a few multiplies."""

    def __init__(self, layer):
        super().__init__(layer)
        self.reset_after = layer.options["reset_after"]

    def forward(self, x, w, training=False, rng=None):
        N, T, D = x.shape
        u = self.units
        dt = w["kernel"].dtype
        bias = w["bias"]
        neg = np.ones(3 * u, dtype=dt)
        neg[: 2 * u] = -1  # exp(-a) for z and r
        b = (bias[0] if self.reset_after else bias).copy()
        if self.reset_after:
            b[: 2 * u] += bias[1, : 2 * u]  # z and r add both biases: one add here, not one a step
        Wt = np.ascontiguousarray((np.concatenate([w["kernel"], b[None]]) * neg).T)  # [3u, D+1]
        Ut = np.ascontiguousarray((w["recurrent_kernel"] * neg).T)  # [3u, u]
        b_rec_h = bias[1, 2 * u :, None] if self.reset_after else None
        Z = np.empty((T, 3 * u, N), dtype=dt)  # the input projections, then z, r, h~
        H = np.zeros((T + 1, u, N), dtype=dt)
        R = np.empty((T, u, N), dtype=dt)  # reset_after: h Wrh + b_rec_h;  else r * h_{t-1}
        rec = np.empty((3 * u, N), dtype=dt)
        tmp = np.empty((u, N), dtype=dt)
        factors = self._factor_arrays(T, u, N, dt) if training else None

        with parallel.Background() as helper:
            xT, block = self.start_projections(helper, x, Wt, Z)
            # exp overflows to inf for gates far in saturation, and 1/(1 + inf) is the exact 0
            with BLAS.one_thread(), np.errstate(over="ignore"):  # the per-step products are too small to share
                for t in range(T):
                    if t % block == 0:
                        helper.wait(t // block + 1)
                    a = Z[t]  # becomes z, r (sigmoid) and h~ (tanh)
                    zr, hh = a[: 2 * u], a[2 * u :]
                    if self.reset_after:
                        np.matmul(Ut, H[t], out=rec)
                        zr += rec[: 2 * u]
                        np.add(rec[2 * u :], b_rec_h, out=R[t])
                    else:
                        np.matmul(Ut[: 2 * u], H[t], out=rec[: 2 * u])
                        zr += rec[: 2 * u]
                    np.exp(zr, out=zr)
                    zr += 1
                    np.reciprocal(zr, out=zr)
                    if self.reset_after:
                        np.multiply(zr[u:], R[t], out=tmp)
                    else:
                        np.multiply(zr[u:], H[t], out=R[t])
                        np.matmul(Ut[2 * u :], R[t], out=tmp)
                    hh += tmp
                    np.tanh(hh, out=hh)
                    h = H[t + 1]  # h = h~ + z * (h_{t-1} - h~)
                    np.subtract(H[t], hh, out=h)
                    h *= zr[:u]
                    h += hh
                    if training and ((t + 1) % block == 0 or t == T - 1):
                        helper.submit(self._factors, Z, H, R, factors, t - t % block, t + 1)
            helper.results()
        y = H[1:].transpose(2, 0, 1).copy() if self.return_sequences else H[-1].T.copy()
        return y, (xT, H, Z, R, factors)

    def _factor_arrays(self, T, u, N, dt):
        """reset_after: (Prec [T, 3, u, N], Ph); else (Pz, Ph, Hrr), each [T, u, N]."""
        if self.reset_after:
            return np.empty((T, 3, u, N), dtype=dt), np.empty((T, u, N), dtype=dt)
        return tuple(np.empty((T, u, N), dtype=dt) for _ in range(3))

    def _factors(self, Z, H, R, out, t0, t1):
        """The factors that turn dL/dh_t into the gate pre-activation gradients, for steps t0..t1-1:
        per unit of dh, dA_z = dh * (h_{t-1} - h~) z(1-z) and dA_h = dh * (1-z)(1-h~^2);
        reset_after: the recurrent product (h Wrh + b_rec) sees dA_z, dA_r and dA_h * r, with
        dA_r = dA_h * (h Wrh + b_rec_h) * r(1-r); else dA_r = d(r*h) * h_{t-1} * r(1-r)."""
        u = self.units
        s = slice(t0, t1)
        z, r, hh = Z[s, :u], Z[s, u : 2 * u], Z[s, 2 * u :]
        if self.reset_after:
            Prec, Ph = out[0][s], out[1][s]
            Pz = Prec[:, 0]
        else:
            Pz, Ph, Hrr = (a[s] for a in out)
        np.subtract(H[s], hh, out=Pz)  # H[s] is h_{t-1} for steps s
        Pz *= z
        np.subtract(1, z, out=Ph)  # 1 - z for now
        Pz *= Ph
        np.multiply(hh, hh, out=Hrr if not self.reset_after else Prec[:, 2])
        one_minus_hh2 = Hrr if not self.reset_after else Prec[:, 2]
        np.subtract(1, one_minus_hh2, out=one_minus_hh2)
        Ph *= one_minus_hh2  # (1-z)(1-h~^2)
        rr = np.subtract(1, r)
        rr *= r  # r(1-r)
        if self.reset_after:
            np.multiply(Ph, R[s], out=Prec[:, 1])
            Prec[:, 1] *= rr
            np.multiply(Ph, r, out=Prec[:, 2])
        else:
            np.multiply(H[s], rr, out=Hrr)

    def backward(self, dy, w, cache, need_dx=True):
        xT, H, Z, R, factors = cache
        T, D1, N = xT.shape
        D = D1 - 1
        u = self.units
        U = w["recurrent_kernel"]  # [u, 3u]: dL/dh_{t-1} = U @ (gradient of the recurrent product)
        W = w["kernel"]
        dt = Z.dtype
        if factors is None:  # the forward ran outside training: all steps at once now
            factors = self._factor_arrays(T, u, N, dt)
            self._factors(Z, H, R, factors, 0, T)
        z = Z[:, :u]
        if self.return_sequences:
            dHs = np.ascontiguousarray(dy.transpose(1, 2, 0))  # [T, u, N]
            dh = np.zeros((u, N), dtype=dt)
        else:
            dh = np.ascontiguousarray(dy.T)
        tmp = np.empty((u, N), dtype=dt)
        # gate-major gradients, [rows, T, N]: a block of steps is a free [rows, (step, sample)]
        # view, whose weight and input gradients are one product each; the input gradient is
        # feature-major (the embedding's backward reads each feature contiguously)
        dA = np.empty((3 * u, T, N), dtype=dt)  # reset_after: z, r, h~ rows of the recurrent product
        dA2 = dA.reshape(3 * u, T * N)
        dAh = np.empty((u, T, N), dtype=dt) if self.reset_after else None  # the input side of h~
        dAh2 = dAh.reshape(u, T * N) if self.reset_after else None
        dxT = np.empty((D, T * N), dtype=dt) if need_dx else None
        Wzr, Wh = np.ascontiguousarray(W[:, : 2 * u]), np.ascontiguousarray(W[:, 2 * u :])

        def products(t0, t1):
            cols = slice(t0 * N, t1 * N)
            xb = np.ascontiguousarray(xT[t0:t1].transpose(1, 0, 2)).reshape(D1, -1)  # [D+1, (step, sample)]
            # h_{t-1}, [u, (step, sample)], and with reset_after a row of ones (b_rec's gradient)
            ones = int(self.reset_after)
            hp = np.empty((u + ones, t1 - t0, N), dtype=dt)
            hp[:u] = H[t0:t1].transpose(1, 0, 2)
            hp[u:] = 1
            hp = hp.reshape(u + ones, -1)
            if self.reset_after:
                gin = np.concatenate([dA2[: 2 * u, cols] @ xb.T, dAh2[:, cols] @ xb.T])  # [3u, D+1]
                grec = dA2[:, cols] @ hp.T  # [3u, u+1]
                if need_dx:
                    np.matmul(Wzr, dA2[: 2 * u, cols], out=dxT[:, cols])
                    dxT[:, cols] += Wh @ dAh2[:, cols]
            else:
                gin = dA2[:, cols] @ xb.T
                rh = R[t0:t1].transpose(1, 0, 2).reshape(u, -1)  # r * h_{t-1}
                grec = np.concatenate([dA2[: 2 * u, cols] @ hp.T, dA2[2 * u :, cols] @ rh.T])  # [3u, u]
                if need_dx:
                    np.matmul(W, dA2[:, cols], out=dxT[:, cols])
            return gin, grec

        block = self.block_size(T)
        with parallel.Background() as helper:
            with BLAS.one_thread():  # the per-step products are too small to share
                if self.reset_after:
                    Prec, Ph = factors
                    dA4 = dA.reshape(3, u, T, N)
                    for t in range(T - 1, -1, -1):
                        if self.return_sequences:
                            dh += dHs[t]
                        np.multiply(Prec[t], dh, out=dA4[:, :, t])
                        np.multiply(Ph[t], dh, out=dAh[:, t])
                        np.multiply(dh, z[t], out=tmp)
                        dh = U @ dA[:, t]
                        dh += tmp
                        if t % block == 0:
                            helper.submit(products, t, min(t + block, T))
                else:
                    Pz, Ph, Hrr = factors
                    r = Z[:, u : 2 * u]
                    Uzr, Uh = np.ascontiguousarray(U[:, : 2 * u]), np.ascontiguousarray(U[:, 2 * u :])
                    for t in range(T - 1, -1, -1):
                        if self.return_sequences:
                            dh += dHs[t]
                        np.multiply(Pz[t], dh, out=dA[:u, t])
                        dAh_t = dA[2 * u :, t]
                        np.multiply(Ph[t], dh, out=dAh_t)
                        drh = Uh @ dAh_t  # through (r*h) Wrh
                        np.multiply(drh, Hrr[t], out=dA[u : 2 * u, t])
                        np.multiply(dh, z[t], out=tmp)
                        drh *= r[t]
                        tmp += drh
                        dh = Uzr @ dA[: 2 * u, t]
                        dh += tmp
                        if t % block == 0:
                            helper.submit(products, t, min(t + block, T))
            parts = helper.results()
        gin = sum(p[0] for p in parts)
        grec = sum(p[1] for p in parts)
        grads = {"kernel": np.ascontiguousarray(gin[:, :D].T)}
        if self.reset_after:
            grads["recurrent_kernel"] = np.ascontiguousarray(grec[:, :u].T)
            grads["bias"] = np.stack([gin[:, D], grec[:, u]])
        else:
            grads["recurrent_kernel"] = np.ascontiguousarray(grec.T)
            grads["bias"] = gin[:, D].copy()
        dx = dxT.reshape(D, T, N).transpose(2, 1, 0) if need_dx else None
        return dx, grads


# --- recurrent layers with every option: general cores, masks, directions -----------------------
# The fast cores above (_LstmFast, _GruFast) compute the default activations without dropout on
# the recurrent state; the general cores below compute any activation pair (kernels.activate)
# and Keras 3's dropout masks, gate-major ([steps, gates, batch, units] arrays). Masks are Keras's
# DropoutRNNCell's: drawn once per sequence and applied at every step, in training only, as
# [batch, k, features] with k = 1 (one mask for every gate) or k = gates (one per gate: what
# LSTM and GRU draw when recurrent_dropout > 0, Keras's implementation 1).


def _gates_in(xt, W, m, gates):
    """The input projection of every step, gate-major: (xt * mask_g) @ W_g as [T, gates, N, u]
    from xt [T, N, D], W [D, gates*u] (Keras's gate blocks side by side) and the masks m
    [N, k, D] (None: none; k = 1: one for every gate)."""
    T, N, D = xt.shape
    u = W.shape[1] // gates
    out = np.empty((T, gates, N, u), dtype=np.result_type(xt, W))
    if m is None or m.shape[1] == 1:
        xm = xt if m is None else xt * m[:, 0]
        out[:] = (xm.reshape(T * N, D) @ W).reshape(T, N, gates, u).transpose(0, 2, 1, 3)
        return out
    for g in range(gates):
        out[:, g] = ((xt * m[:, g]).reshape(T * N, D) @ W[:, g * u : (g + 1) * u]).reshape(T, N, u)
    return out


def _gates_in_backward(xt, W, m, dA, gates, need_dx):
    """The gradients of _gates_in: dW [D, gates*u] and dx [T, N, D] (None unless need_dx) from
    dA [T, gates, N, u]. Also the recurrent kernel's gradient, with h_{t-1} for xt."""
    T, N, D = xt.shape
    u = W.shape[1] // gates
    if m is None or m.shape[1] == 1:
        dA2 = dA.transpose(0, 2, 1, 3).reshape(T * N, gates * u)
        xm = xt if m is None else xt * m[:, 0]
        dW = xm.reshape(T * N, D).T @ dA2
        dx = (dA2 @ W.T).reshape(T, N, D) if need_dx else None
        if dx is not None and m is not None:
            dx *= m[:, 0]
        return dW, dx
    dW = np.empty(W.shape, dtype=dA.dtype)
    dx = np.zeros((T, N, D), dtype=dA.dtype) if need_dx else None
    for g in range(gates):
        sl = slice(g * u, (g + 1) * u)
        dAg = dA[:, g].reshape(T * N, u)
        dW[:, sl] = (xt * m[:, g]).reshape(T * N, D).T @ dAg
        if need_dx:
            dx += (dAg @ W[:, sl].T).reshape(T, N, D) * m[:, g]
    return dW, dx


def _gate_kernels(U, gates):
    """U [u, gates*u] as [gates, u, u] (U_g = U[:, g*u:(g+1)*u]) and its transposes."""
    u = U.shape[0]
    Ug = np.ascontiguousarray(U.reshape(u, gates, u).transpose(1, 0, 2))
    return Ug, np.ascontiguousarray(Ug.transpose(0, 2, 1))


def _gate_masks(m):
    """Masks [N, k, u] gate-major, [k, N, u] (None stays None)."""
    return None if m is None else np.ascontiguousarray(m.transpose(1, 0, 2))


def _masked_sum(d, mg):
    """dL/dh_{t-1} = sum_g d_g * mask_g from d [gates, N, u] and the masks [k, N, u]."""
    if mg is None:
        return d.sum(axis=0)
    if mg.shape[0] == 1:
        return d.sum(axis=0) * mg[0]
    return (d * mg).sum(axis=0)


class _LstmGeneral(_Recurrent):
    """LSTM, one direction, any activation and recurrent activation, Keras's dropout masks:
        a_g = (x * m_g) W_g + b_g + (h_{t-1} * mr_g) U_g  for the gates g = i, f, c, o
        i, f, o = ract(a_i, a_f, a_o);  g = act(a_c);  c_t = f*c_{t-1} + i*g;  h_t = o*act(c_t)
    Arrays are gate-major ([steps, gates, batch, units]): each gate a contiguous block, each
    activation one call over the gates that share it (softmax runs over a gate's units, as in
    Keras), the masked recurrent products of a step one batched product."""

    def __init__(self, layer):
        super().__init__(layer)
        self.act = layer.options["activation"]
        self.ract = layer.options["recurrent_activation"]

    def _activate(self, out, a):
        if self.act == self.ract:
            out[:] = activate(self.act, a)
            return
        out[:2] = activate(self.ract, a[:2])  # i, f
        out[2] = activate(self.act, a[2])  # c
        out[3] = activate(self.ract, a[3])  # o

    def _activate_backward(self, out, v, dv, a):
        if self.act == self.ract:
            out[:] = activate_backward(self.act, v, dv, a)
            return
        out[:2] = activate_backward(self.ract, v[:2], dv[:2], a[:2])
        out[2] = activate_backward(self.act, v[2], dv[2], a[2])
        out[3] = activate_backward(self.ract, v[3], dv[3], a[3])

    def forward(self, x, w, training=False, masks=(None, None)):
        mi, mr = masks
        xt = self.time_major(x)
        T, N, D = xt.shape
        u = self.units
        Ug, _ = _gate_kernels(w["recurrent_kernel"], 4)
        mrg = _gate_masks(mr)
        A = _gates_in(xt, w["kernel"], mi, 4)  # becomes the gates' pre-activations
        A += w["bias"].reshape(4, 1, u)
        V = np.empty_like(A)  # gate values i, f, g, o
        H = np.zeros((T + 1, N, u), dtype=A.dtype)
        C = np.zeros((T + 1, N, u), dtype=A.dtype)
        TC = np.empty((T, N, u), dtype=A.dtype)  # act(c_t)
        with BLAS.one_thread():  # the per-step products are too small to share
            for t in range(T):
                if t:  # h_0 = 0
                    A[t] += np.matmul(H[t] if mrg is None else H[t] * mrg, Ug)
                self._activate(V[t], A[t])
                i, f, g, o = V[t]
                c = C[t + 1]
                np.multiply(f, C[t], out=c)
                c += i * g
                TC[t] = activate(self.act, c)
                np.multiply(o, TC[t], out=H[t + 1])
        return self.output(H), (xt, A, V, H, C, TC, mi, mr)

    def backward(self, dy, w, cache, need_dx=True):
        xt, A, V, H, C, TC, mi, mr = cache
        T, N, D = xt.shape
        u = self.units
        U = w["recurrent_kernel"]
        _, UgT = _gate_kernels(U, 4)
        mrg = _gate_masks(mr)
        dH = self.dh_steps(dy, T)
        dA = np.empty_like(A)
        dV = np.empty((4, N, u), dtype=A.dtype)
        dh = np.zeros((N, u), dtype=A.dtype)
        dc = np.zeros((N, u), dtype=A.dtype)
        with BLAS.one_thread():
            for t in range(T - 1, -1, -1):
                dh += dH[t]
                i, f, g, o = V[t]
                dc += activate_backward(self.act, TC[t], dh * o, C[t + 1])
                np.multiply(dc, g, out=dV[0])  # d i
                np.multiply(dc, C[t], out=dV[1])  # d f
                np.multiply(dc, i, out=dV[2])  # d g
                np.multiply(dh, TC[t], out=dV[3])  # d o
                self._activate_backward(dA[t], V[t], dV, A[t])
                dc *= f
                dh = _masked_sum(np.matmul(dA[t], UgT), mrg)
        dW, dx = _gates_in_backward(xt, w["kernel"], mi, dA, 4, need_dx)
        grads = {"kernel": dW, "recurrent_kernel": _gates_in_backward(H[:-1], U, mr, dA, 4, False)[0],
                 "bias": dA.sum(axis=(0, 2)).reshape(-1)}
        return (dx.transpose(1, 0, 2) if dx is not None else None), grads


class _GruGeneral(_Recurrent):
    """GRU, one direction, any activation and recurrent activation, Keras's dropout masks (gates
    z, r, h; mr_g masks h_{t-1} in gate g's recurrent product):
        z = ract((x*m_z) W_z + b_z + (h*mr_z) U_z (+ b'_z)),  r likewise
        reset_after:  h~ = act((x*m_h) W_h + b_h + r * ((h*mr_h) U_h + b'_h))
        else:         h~ = act((x*m_h) W_h + b_h + (r * (h*mr_h)) U_h)
        h_t = z*h_{t-1} + (1-z)*h~
    Gate-major, as the LSTM's."""

    def __init__(self, layer):
        super().__init__(layer)
        self.act = layer.options["activation"]
        self.ract = layer.options["recurrent_activation"]
        self.reset_after = layer.options["reset_after"]

    @staticmethod
    def _zr_masks(mrg):
        """The masks of z and r's recurrent products, and of h~'s ([k, N, u] each; or None)."""
        if mrg is None:
            return None, None
        return (mrg, mrg[0]) if mrg.shape[0] == 1 else (mrg[:2], mrg[2])

    def forward(self, x, w, training=False, masks=(None, None)):
        mi, mr = masks
        xt = self.time_major(x)
        T, N, D = xt.shape
        u = self.units
        Ug, _ = _gate_kernels(w["recurrent_kernel"], 3)
        bias = w["bias"]
        mrg = _gate_masks(mr)
        mzr, mh = self._zr_masks(mrg)
        P = _gates_in(xt, w["kernel"], mi, 3)  # becomes the pre-activations of z, r, h~
        P += (bias[0] if self.reset_after else bias).reshape(3, 1, u)
        b_rec = bias[1].reshape(3, 1, u) if self.reset_after else None
        H = np.zeros((T + 1, N, u), dtype=P.dtype)
        V = np.empty_like(P)  # z, r, h~
        RH = np.empty((T, N, u), dtype=P.dtype)  # reset_after: (h*mr_h) U_h + b'_h;  else r * (h*mr_h)
        with BLAS.one_thread():
            for t in range(T):
                h = H[t]
                p = P[t]
                if self.reset_after:
                    rec = np.matmul(h if mrg is None else h * mrg, Ug)
                    rec += b_rec
                    p[:2] += rec[:2]
                    RH[t] = rec[2]
                else:
                    p[:2] += np.matmul(h if mzr is None else h * mzr, Ug[:2])
                V[t, :2] = activate(self.ract, p[:2])
                z, r = V[t, 0], V[t, 1]
                if self.reset_after:
                    p[2] += r * RH[t]
                else:
                    np.multiply(r, h if mh is None else h * mh, out=RH[t])
                    p[2] += RH[t] @ Ug[2]
                V[t, 2] = activate(self.act, p[2])
                hh = V[t, 2]
                H[t + 1] = z * h + (1 - z) * hh
        return self.output(H), (xt, P, V, H, RH, mi, mr)

    def backward(self, dy, w, cache, need_dx=True):
        xt, P, V, H, RH, mi, mr = cache
        T, N, D = xt.shape
        u = self.units
        U = w["recurrent_kernel"]
        _, UgT = _gate_kernels(U, 3)
        mrg = _gate_masks(mr)
        mzr, mh = self._zr_masks(mrg)
        dH = self.dh_steps(dy, T)
        dA = np.empty_like(P)  # d(pre-activations) of z, r, h~: the input side's gradient
        dRec = np.empty_like(P) if self.reset_after else None  # of the recurrent products (+ b')
        dV = np.empty((2, N, u), dtype=P.dtype)
        dh = np.zeros((N, u), dtype=P.dtype)
        with BLAS.one_thread():
            for t in range(T - 1, -1, -1):
                dh += dH[t]
                h = H[t]
                z, r, hh = V[t]
                dah = activate_backward(self.act, hh, dh * (1 - z), P[t, 2])
                dnext = dh * z
                np.multiply(dh, h - hh, out=dV[0])  # d z
                if self.reset_after:
                    np.multiply(dah, RH[t], out=dV[1])  # d r
                else:
                    drh = dah @ UgT[2]  # d(r * (h*mr_h))
                    np.multiply(drh, h if mh is None else h * mh, out=dV[1])
                    dnext += drh * r if mh is None else drh * r * mh
                dA[t, :2] = activate_backward(self.ract, V[t, :2], dV, P[t, :2])
                dA[t, 2] = dah
                if self.reset_after:
                    dRec[t, :2] = dA[t, :2]
                    np.multiply(dah, r, out=dRec[t, 2])
                    dnext += _masked_sum(np.matmul(dRec[t], UgT), mrg)
                else:
                    dnext += _masked_sum(np.matmul(dA[t, :2], UgT[:2]), mzr)
                dh = dnext
        dW, dx = _gates_in_backward(xt, w["kernel"], mi, dA, 3, need_dx)
        grads = {"kernel": dW}
        if self.reset_after:
            grads["recurrent_kernel"] = _gates_in_backward(H[:-1], U, mr, dRec, 3, False)[0]
            grads["bias"] = np.stack([dA.sum(axis=(0, 2)).reshape(-1), dRec.sum(axis=(0, 2)).reshape(-1)])
        else:
            dU = np.empty(U.shape, dtype=P.dtype)
            mzr_n = None if mr is None else mr if mr.shape[1] == 1 else mr[:, :2]
            dU[:, : 2 * u] = _gates_in_backward(H[:-1], U[:, : 2 * u], mzr_n, dA[:, :2], 2, False)[0]
            dU[:, 2 * u :] = RH.reshape(T * N, u).T @ dA[:, 2].reshape(T * N, u)
            grads["recurrent_kernel"] = dU
            grads["bias"] = dA.sum(axis=(0, 2)).reshape(-1)
        return (dx.transpose(1, 0, 2) if dx is not None else None), grads


class _RecurrentLayer:
    """rnn, lstm and gru with every option of LANGUAGE.md: one direction or Keras's
    Bidirectional (a forward and a go_backwards instance, the latter's sequence flipped back
    before the merge when return_sequences, as Keras does), go_backwards (the input read from
    its end; the returned sequence is in reading order, as Keras 3 returns it), dropout and
    recurrent_dropout (Keras's masks, training only), any activations. The default activations
    without recurrent dropout run on the fast core, an input dropout mask multiplied in front of
    it; everything else on the general core.
    Noise (Network's protocol, draws()): per direction, [n, k, features] for dropout and
    [n, k, units] for recurrent_dropout, k being 1 or (LSTM, GRU with recurrent_dropout > 0)
    the number of gates; the forward direction's first."""

    gates = 1
    fast_core: type | None = None
    general_core: type

    def __init__(self, layer):
        o = layer.options
        self.units = o["units"]
        self.return_sequences = o["return_sequences"]
        self.bidirectional = bool(o.get("bidirectional", False))
        self.merge = o.get("merge", "concat")
        self.go_backwards = bool(o.get("go_backwards", False))
        self.dropout = float(o.get("dropout", 0.0))
        self.recurrent_dropout = float(o.get("recurrent_dropout", 0.0))
        self.features = layer.input_shape[-1]
        # one mask per gate where Keras switches to its implementation 1 (recurrent dropout)
        self.k = self.gates if self.gates > 1 and self.recurrent_dropout > 0 else 1
        default = o.get("activation", "tanh") == "tanh" and o.get("recurrent_activation", "sigmoid") == "sigmoid"
        self.fast = self.fast_core(layer) if self.fast_core is not None and default else None
        self.general = self.general_core(layer)

    def _direction_draws(self, n):
        shapes = []
        if self.dropout > 0:
            shapes.append((n, self.k, self.features))
        if self.recurrent_dropout > 0:
            shapes.append((n, self.k, self.units))
        return shapes

    def draws(self, n):
        """The uniform draws a training batch of n needs (Network takes them before chunking)."""
        return self._direction_draws(n) * (2 if self.bidirectional else 1)

    def _masks(self, n, dtype, rng):
        """(input mask, recurrent mask) of one direction, each None where its rate is 0."""
        out = []
        for rate, size in ((self.dropout, self.features), (self.recurrent_dropout, self.units)):
            if rate <= 0:
                out.append(None)
                continue
            if rng is None:
                raise ValueError("recurrent dropout in training needs an rng (numpy.random.Generator)")
            u = rng.random((n, self.k, size), dtype=dtype)
            out.append((u >= rate).astype(dtype) * dtype.type(1.0 / (1.0 - rate)))  # kept: 1 / (1 - rate)
        return tuple(out)

    def _forward_direction(self, x, w, training, masks, backwards):
        if backwards:
            x = x[:, ::-1]
        mi, mr = masks
        if self.fast is not None and mr is None:
            y, cache = self.fast.forward(x if mi is None else x * mi, w, training)
            return y, (True, cache, mi, backwards)
        y, cache = self.general.forward(x, w, training, masks)
        return y, (False, cache, None, backwards)

    def _backward_direction(self, dy, w, cache, need_dx):
        fast, c, mi, backwards = cache
        dx, grads = (self.fast if fast else self.general).backward(dy, w, c, need_dx)
        if dx is not None:
            if mi is not None:
                dx = dx * mi
            if backwards:
                dx = dx[:, ::-1]
        return dx, grads

    def forward(self, x, w, training=False, rng=None):
        n = x.shape[0]
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)  # rng.random's dtypes
        noisy = training and (self.dropout > 0 or self.recurrent_dropout > 0)
        if not self.bidirectional:
            masks = self._masks(n, dtype, rng) if noisy else (None, None)
            return self._forward_direction(x, w, training, masks, self.go_backwards)
        mf = self._masks(n, dtype, rng) if noisy else (None, None)
        mb = self._masks(n, dtype, rng) if noisy else (None, None)
        yf, cf = self._forward_direction(x, _prefixed(w, "forward."), training, mf, False)
        yb, cb = self._forward_direction(x, _prefixed(w, "backward."), training, mb, True)
        if self.return_sequences:
            yb = yb[:, ::-1]  # back in the input's order
        if self.merge == "concat":
            y = np.concatenate([yf, yb], axis=-1)
        elif self.merge == "sum":
            y = yf + yb
        elif self.merge == "mul":
            y = yf * yb
        else:  # ave: (y + y_rev) / 2, as Keras computes it
            y = (yf + yb) / yf.dtype.type(2)
        return y, (cf, cb, yf, yb)

    def backward(self, dy, w, cache, need_dx=True):
        if not self.bidirectional:
            return self._backward_direction(dy, w, cache, need_dx)
        cf, cb, yf, yb = cache
        u = self.units
        if self.merge == "concat":
            dyf, dyb = dy[..., :u], dy[..., u:]
        elif self.merge == "sum":
            dyf = dyb = dy
        elif self.merge == "mul":
            dyf, dyb = dy * yb, dy * yf
        else:
            dyf = dyb = dy / dy.dtype.type(2)
        if self.return_sequences:
            dyb = dyb[:, ::-1]
        dxf, gf = self._backward_direction(dyf, _prefixed(w, "forward."), cf, need_dx)
        dxb, gb = self._backward_direction(dyb, _prefixed(w, "backward."), cb, need_dx)
        grads = {f"forward.{k}": v for k, v in gf.items()}
        grads.update({f"backward.{k}": v for k, v in gb.items()})
        return (dxf + dxb if need_dx else None), grads


def _prefixed(w, prefix):
    return {k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)}


class Rnn(_RecurrentLayer):
    """SimpleRNN (and Bidirectional(SimpleRNN)): every activation on the one core."""

    general_core = _RnnCore


class Lstm(_RecurrentLayer):
    """LSTM (and Bidirectional(LSTM))."""

    gates = 4
    fast_core = _LstmFast
    general_core = _LstmGeneral


class Gru(_RecurrentLayer):
    """GRU (and Bidirectional(GRU))."""

    gates = 3
    fast_core = _GruFast
    general_core = _GruGeneral


# --- merges: the joins of blocks (nnc.lang.model.Block; LANGUAGE.md, "Blocks") ----------------------
# A merge kernel is built from a checked merge block and joins its branches' outputs:
#
#     m = MERGE_KERNELS[block.merge](block)
#     y, cache = m.forward(xs)            # xs: one array per branch, in branch order
#     dxs = m.backward(dy, cache)         # one gradient per branch (the same array may repeat)
#
# Each computes what its Keras merge layer computes, in Keras's order of operations (a left
# fold over the inputs), so float32 results agree to the last bit where the order matters.
# Backward never writes into dy or into the gradients it returns: Network hands them to
# several branches (and so must every layer kernel's backward with its dy).


class AddMerge:
    """Keras Add: x0 + x1 + ...; every branch gets dy."""

    def __init__(self, block=None):
        pass

    def forward(self, xs):
        y = xs[0] + xs[1] if len(xs) > 1 else xs[0].copy()
        for x in xs[2:]:
            y += x
        return y, len(xs)

    def backward(self, dy, cache):
        return [dy] * cache


class AverageMerge:
    """Keras Average: (x0 + x1 + ...) / n, a division as Keras does it; each branch gets dy / n."""

    def __init__(self, block=None):
        pass

    def forward(self, xs):
        y, n = AddMerge().forward(xs)
        y /= n
        return y, n

    def backward(self, dy, cache):
        return [dy / cache] * cache


class SubtractMerge:
    """Keras Subtract: x0 - x1 (two branches)."""

    def __init__(self, block=None):
        pass

    def forward(self, xs):
        if len(xs) != 2:
            raise ValueError(f"subtract joins two branches, not {len(xs)}")
        return xs[0] - xs[1], None

    def backward(self, dy, cache):
        return [dy, -dy]


class MultiplyMerge:
    """Keras Multiply: ((x0 * x1) * x2) ...; the product rule: branch i gets dy times the
    product of the others (prefix and suffix products, so a zero input divides nothing)."""

    def __init__(self, block=None):
        pass

    def forward(self, xs):
        y = xs[0] * xs[1] if len(xs) > 1 else xs[0].copy()
        for x in xs[2:]:
            y *= x
        return y, xs

    def backward(self, dy, cache):
        xs = cache
        n = len(xs)
        if n == 2:
            return [dy * xs[1], dy * xs[0]]
        prefix, p = [], None  # prefix[i] = x0 * ... * x(i-1)
        for x in xs:
            prefix.append(p)
            p = x if p is None else p * x
        out, s = [None] * n, None  # s = x(i+1) * ... * x(n-1)
        for i in range(n - 1, -1, -1):
            g = dy if prefix[i] is None else dy * prefix[i]
            out[i] = g if s is None else g * s
            s = xs[i] if s is None else s * xs[i]
        return out


class _ExtremumMerge:
    """Keras Maximum/Minimum: a left fold of ops.maximum (ops.minimum). Its gradient is the one
    Keras computes on the torch backend: at each pairwise step the winner takes dy and a tie
    splits it in halves (torch.maximum's rule), so with three equal inputs the first two get a
    quarter each and the third a half. (TensorFlow gives a tie wholly to the first.)"""

    pick = staticmethod(np.maximum)
    beats = staticmethod(np.greater)

    def __init__(self, block=None):
        pass

    def forward(self, xs):
        y = xs[0]
        steps = []
        for x in xs[1:]:
            steps.append((self.beats(y, x), np.equal(y, x)))  # the running result wins / ties
            y = self.pick(y, x)
        return (y.copy() if len(xs) == 1 else y), steps

    def backward(self, dy, cache):
        steps = cache
        out = [None] * (len(steps) + 1)
        g = dy
        for k in range(len(steps), 0, -1):
            wins, ties = steps[k - 1]
            share = np.where(ties, dy.dtype.type(0.5), wins.astype(dy.dtype))  # the running result's share
            out[k] = g - g * share
            g = g * share
        out[0] = g
        return out


class MaximumMerge(_ExtremumMerge):
    pick = staticmethod(np.maximum)
    beats = staticmethod(np.greater)


class MinimumMerge(_ExtremumMerge):
    pick = staticmethod(np.minimum)
    beats = staticmethod(np.less)


class ConcatMerge:
    """Keras Concatenate(axis): options["axis"] counts the batch as axis 0 (-1: the last), as
    the arrays here do; backward hands each branch its slice of dy (views, no copies)."""

    def __init__(self, block):
        self.axis = int(block.options.get("axis", -1))

    def forward(self, xs):
        return np.concatenate(xs, axis=self.axis), [x.shape[self.axis] for x in xs]

    def backward(self, dy, cache):
        bounds = np.cumsum(cache)[:-1]
        return np.split(dy, bounds, axis=self.axis)


MERGE_KERNELS: dict[str, type] = {
    "add": AddMerge,
    "average": AverageMerge,
    "subtract": SubtractMerge,
    "multiply": MultiplyMerge,
    "maximum": MaximumMerge,
    "minimum": MinimumMerge,
    "concat": ConcatMerge,
}
"""The join of each merge block kind (nnc.lang.model.MERGES; `residual` joins with `add`)."""


KERNELS: dict[str, type] = {
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
    "relu": Activation,
    "sigmoid": Activation,
    "tanh": Activation,
    "softmax": Activation,
    "embedding": Embedding,
    "rnn": Rnn,
    "lstm": Lstm,
    "gru": Gru,
}

# Kernels of the kinds added with LANGUAGE.md's "More kinds and options", one module per family;
# they build on the classes above.
from nnc.engines.numpy import kernels_conv as _kernels_conv, kernels_more as _kernels_more  # noqa: E402

KERNELS.update(_kernels_conv.KERNELS)
KERNELS.update(_kernels_more.KERNELS)
