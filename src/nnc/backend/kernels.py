"""NumPy forward and backward for every layer kind, each chain rule beside its forward.

A kernel is a small class built from one checked layer (nnc.model.Layer):

    k = KERNELS[layer.kind](layer)
    y, cache = k.forward(x, w, training, rng)      # w: {"kernel": ..., "bias": ...} (Keras layouts)
    dx, dw = k.backward(dy, w, cache, need_dx)     # dw has the same short names as w

Everything is vectorized over the batch: a convolution is one im2col copy (a loop over the
kh*kw window offsets, each a whole-batch slice) and one matrix product; a recurrent layer
projects the inputs of all time steps in one matrix product and loops only over time, with
the weight gradients taken after the loop as one product each. Arrays are kept in the
weights' dtype (float32 normally, float64 for gradient checks).

Keras semantics, which these follow exactly: channels-last; conv kernels [kh, kw, in, out];
`same` padding puts the odd pixel at the end (nnc.kinds.same_pads); max pooling pads with
-inf; average pooling with `same` divides by the number of unpadded elements in each window;
LSTM gates i, f, c, o; GRU gates z, r, h with h = z*h_prev + (1-z)*h~; dropout is inverted
(kept units scaled by 1/(1-rate)) and active only in training.
"""

from __future__ import annotations

from itertools import product
from math import prod

import numpy as np

from ..errors import UserError
from . import parallel
from .parallel import BLAS

# --- activations ------------------------------------------------------------------------------
# Each backward is written in terms of the activation's output y, so a layer caches only y.


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


def activate(name: str, x: np.ndarray) -> np.ndarray:
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
    raise ValueError(f"unknown activation {name!r}")


def activate_backward(name: str, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dL/dx from dL/dy and y = activation(x)."""
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
    raise ValueError(f"unknown activation {name!r}")


class Activation:
    """relu, sigmoid, tanh, softmax layers, and the activation option of dense and conv layers
    (Network runs it as a step of its own, so that a final softmax/sigmoid can be left to the loss)."""

    def __init__(self, layer=None, name: str | None = None):
        self.name = name if name is not None else layer.kind

    def forward(self, x, w, training=False, rng=None):
        y = activate(self.name, x)
        return y, y

    def backward(self, dy, w, cache, need_dx=True):
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
    the product as the kernel's last row: no separate pass to add it or to sum its gradient."""

    def __init__(self, layer):
        super().__init__(layer)
        self.filters = layer.options["filters"]
        self.use_bias = layer.options["use_bias"]

    def im2col(self, x):
        """[n*prod(out), prod(window)*in (+1 for the bias)], rows in Keras's kernel order."""
        xp = np.ascontiguousarray(self.pad(x))
        n, c = x.shape[0], x.shape[-1]
        k = prod(self.window) * c
        cols = np.empty((n,) + self.out + (k + self.use_bias,), dtype=x.dtype)
        if self.use_bias:
            cols[..., k] = 1
        body = cols[..., :k]
        if self.window[-1] * c >= 16:
            # one copy from a strided view: along the last spatial axis a window's elements and
            # their channels are contiguous in memory (kw*in values), so the view is
            # [n, *out, *window[:-1], kw*in] and the copy moves long contiguous runs
            st = xp.strides
            d = len(self.out)
            shape = (n,) + self.out + self.window[:-1] + (self.window[-1] * c,)
            strides = ((st[0],) + tuple(st[1 + a] * self.strides[a] for a in range(d))
                       + tuple(st[1 + a] for a in range(d - 1)) + (st[-1],))
            view = np.lib.stride_tricks.as_strided(xp, shape, strides, writeable=False)
            np.copyto(np.reshape(body, shape, copy=False), view)
        else:
            # few channels: one copy per window offset, each over the whole batch, into
            # blocks[n, *out, *window, c] (the row order of the Keras kernel [*window, in, out])
            blocks = np.reshape(body, (n,) + self.out + self.window + (c,), copy=False)
            lead = (slice(None),) * (1 + len(self.out))
            for off in self.offsets:
                blocks[lead + off] = xp[_window_slices(off, self.strides, self.out)]
        return cols.reshape(n * prod(self.out), -1)

    def _matrix(self, w):
        kernel = w["kernel"].reshape(-1, self.filters)
        return np.concatenate([kernel, w["bias"][None]]) if self.use_bias else kernel

    def forward(self, x, w, training=False, rng=None):
        cols = self.im2col(x)
        y = cols @ self._matrix(w)
        return y.reshape((x.shape[0],) + self.out + (self.filters,)), (cols, x.shape)

    def backward(self, dy, w, cache, need_dx=True):
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
        """Gradients of the input projection xt @ kernel (+ bias) from dA [T, N, G]: one product each."""
        T, N, D = xt.shape
        dA2 = dA.reshape(T * N, -1)
        dkernel = xt.reshape(T * N, D).T @ dA2
        dx = (dA2 @ w["kernel"].T).reshape(T, N, D).transpose(1, 0, 2) if need_dx else None
        return dkernel, dx


class Rnn(_Recurrent):
    """SimpleRNN: h_t = act(x_t W + h_{t-1} U + b)."""

    def __init__(self, layer):
        super().__init__(layer)
        self.activation = layer.options["activation"]

    def forward(self, x, w, training=False, rng=None):
        xt = self.time_major(x)
        T, N, D = xt.shape
        u = self.units
        Z = (xt.reshape(T * N, D) @ w["kernel"] + w["bias"]).reshape(T, N, u)
        U = w["recurrent_kernel"]
        H = np.zeros((T + 1, N, u), dtype=Z.dtype)
        with BLAS.one_thread():  # the per-step products are too small to share
            for t in range(T):
                a = H[t] @ U
                a += Z[t]
                H[t + 1] = activate(self.activation, a)
        return self.output(H), (xt, H)

    def backward(self, dy, w, cache, need_dx=True):
        xt, H = cache
        T = xt.shape[0]
        dH = self.dh_steps(dy, T)
        U_T = w["recurrent_kernel"].T
        dA = np.empty_like(dH)
        dh = np.zeros_like(dH[0])
        with BLAS.one_thread():  # the per-step products are too small to share
            for t in range(T - 1, -1, -1):
                dh += dH[t]
                dA[t] = activate_backward(self.activation, H[t + 1], dh)
                dh = dA[t] @ U_T
        u = self.units
        dkernel, dx = self.input_grads(xt, dA, w, need_dx)
        grads = {
            "kernel": dkernel,
            "recurrent_kernel": H[:-1].reshape(-1, u).T @ dA.reshape(-1, u),
            "bias": dA.sum(axis=(0, 1)),
        }
        return dx, grads


class Lstm(_Recurrent):
    """LSTM, Keras gate order i, f, c, o, recurrent activation sigmoid, activation tanh:
        i, f, o = sigmoid(a_i, a_f, a_o);  g = tanh(a_c)
        c_t = f*c_{t-1} + i*g;  h_t = o*tanh(c_t)
    Laid out for speed, not for reading like Keras: states are kept transposed ([units, batch])
    and the gates reordered to o, i, f, g, so that every gate is a contiguous block of rows
    (numpy is several times slower on column slices), the sigmoid gates are one block, and the
    three gates that scale dc in backward are another. One tanh per step computes all four:
    sigmoid(a) = 0.5*tanh(a/2) + 0.5, so the o, i, f rows of the weights are halved (exact in
    binary) for the forward pass. The input carries a row of ones, so the bias rides in the
    input projection and its gradient in the kernel's."""

    def _order(self):
        u = self.units  # internal row k holds Keras gate column order[k]
        return np.r_[3 * u : 4 * u, 0 : 2 * u, 2 * u : 3 * u]

    def forward(self, x, w, training=False, rng=None):
        N, T, D = x.shape
        u = self.units
        dt = w["kernel"].dtype
        order = self._order()
        scale = np.ones(4 * u, dtype=dt)
        scale[: 3 * u] = 0.5
        Wb = np.concatenate([w["kernel"][:, order], w["bias"][order][None]]) * scale  # [D+1, 4u]
        Wt = np.ascontiguousarray(Wb.T)
        Ut = np.ascontiguousarray((w["recurrent_kernel"][:, order] * scale).T)  # [4u, u]
        xT = np.empty((T, D + 1, N), dtype=dt)  # [T, D+1, N]: the input, transposed, and ones
        xT[:, :D] = x.transpose(1, 2, 0)
        xT[:, D] = 1
        # the input projection of every step at once, [T, 4u, N]; its small products are shared
        # out by steps over the cores
        S = np.empty((T, 4 * u, N), dtype=dt)
        parallel.run(lambda ts: np.matmul(Wt, xT[ts], out=S[ts]), parallel.chunks(T, parallel.default_threads()))
        H = np.zeros((T + 1, u, N), dtype=dt)
        C = np.zeros((T + 1, u, N), dtype=dt)
        TC = np.empty((T, u, N), dtype=dt)
        rec = np.empty((4 * u, N), dtype=dt)
        ig = np.empty((u, N), dtype=dt)
        # in training, backward's factors are computed here, step by step, while each step's
        # values are still in cache (about half the cost of a pass over all steps afterwards)
        P = np.empty_like(S) if training else None
        Q = np.empty_like(TC) if training else None
        with BLAS.one_thread():  # the per-step products are too small to share
            for t in range(T):
                a = S[t]  # becomes the gate values o, i, f (sigmoid) and g (tanh)
                np.matmul(Ut, H[t], out=rec)
                a += rec
                np.tanh(a, out=a)
                if training:  # 1 - tanh^2: 1-g^2 for g, and 4 s(1-s) for o, i, f (the 4 is undone in backward)
                    p = P[t]
                    np.multiply(a, a, out=p)
                    np.subtract(1, p, out=p)
                sig = a[: 3 * u]
                sig *= 0.5
                sig += 0.5
                c = C[t + 1]
                np.multiply(a[2 * u : 3 * u], C[t], out=c)  # f * c_{t-1}
                np.multiply(a[u : 2 * u], a[3 * u :], out=ig)  # i * g
                c += ig
                tc = TC[t]
                np.tanh(c, out=tc)
                np.multiply(a[:u], tc, out=H[t + 1])  # o * tanh(c)
                if training:
                    p[:u] *= tc  # dA_o = dh * tanh(c) * o(1-o)
                    p[u : 2 * u] *= a[3 * u :]  # dA_i = dc * g * i(1-i)
                    p[2 * u : 3 * u] *= C[t]  # dA_f = dc * c_{t-1} * f(1-f)
                    p[3 * u :] *= a[u : 2 * u]  # dA_g = dc * i * (1-g^2)
                    q = Q[t]  # dc += dh * o * (1 - tanh(c)^2)
                    np.multiply(tc, tc, out=q)
                    np.subtract(1, q, out=q)
                    q *= a[:u]
        y = H[1:].transpose(2, 0, 1).copy() if self.return_sequences else H[-1].T.copy()
        return y, (xT, H, C, TC, S, (P, Q) if training else None)

    @staticmethod
    def _factors(S, Cprev, TC, u, P, Q):
        """The factors that turn the carries (dh, dc) into gate pre-activation gradients, into
        P and Q, for all steps at once (the training forward makes them step by step).
        S: gate values [steps, 4u, N]; Cprev: c_{t-1} [steps, u, N]; TC: tanh(c_t).
        The o, i, f rows of P carry a factor 4, as the forward's do: 4 s(1-s) = 1 - tanh(a/2)^2."""
        o, i, g = S[:, :u], S[:, u : 2 * u], S[:, 3 * u :]
        ps = P[:, : 3 * u]
        np.subtract(1, S[:, : 3 * u], out=ps)
        ps *= S[:, : 3 * u]
        ps *= 4  # 4 s(1-s) for o, i, f
        P[:, :u] *= TC  # dA_o = dh * tanh(c) * o(1-o)
        P[:, u : 2 * u] *= g  # dA_i = dc * g * i(1-i)
        P[:, 2 * u : 3 * u] *= Cprev  # dA_f = dc * c_{t-1} * f(1-f)
        pg = P[:, 3 * u :]
        np.multiply(g, g, out=pg)
        np.subtract(1, pg, out=pg)
        pg *= i  # dA_g = dc * i * (1-g^2)
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
        # dA below is 4x the true gradient in the o, i, f rows (P's factor 4): every product
        # that reads dA takes the 1/4 in its other operand or its result
        quarter = np.ones(4 * u, dtype=S.dtype)
        quarter[: 3 * u] = 0.25
        U = np.ascontiguousarray(w["recurrent_kernel"][:, order] * quarter)  # [u, 4u]
        # dA is gate-major, [4u, T, N]: each step writes rows of N values, and afterwards every
        # weight gradient is one matrix product over all (step, sample) pairs of a free view
        dA = np.empty((4 * u, T, N), dtype=S.dtype)
        if self.return_sequences:
            dHs = np.ascontiguousarray(dy.transpose(1, 2, 0))  # [T, u, N]
            dh = np.zeros((u, N), dtype=S.dtype)
        else:
            dh = np.ascontiguousarray(dy.T)
        dc = np.zeros((u, N), dtype=S.dtype)
        tmp = np.empty((u, N), dtype=S.dtype)
        P4 = P.reshape(T, 4, u, N)  # views made once: a reshape per step costs more than its multiply
        dA4 = dA.reshape(4, u, T, N)
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
        dA2 = dA.reshape(4 * u, T * N)
        # kernel, bias and recurrent kernel in one product: the operand stacks the input, the
        # ones row and h_{t-1}, each [rows, (step, sample)]; as the right operand transposed,
        # OpenBLAS splits this long product well over threads
        xh = np.empty((D1 + u, T, N), dtype=S.dtype)
        xh[:D1] = xT.transpose(1, 0, 2)
        xh[D1:] = H[:-1].transpose(1, 0, 2)
        xh2 = xh.reshape(D1 + u, T * N)
        # long products with small results: OpenBLAS splits them poorly, so split the
        # (step, sample) axis over the cores here, one BLAS thread each
        cols = parallel.chunks(T * N, parallel.default_threads())
        G = sum(parallel.run(lambda c: dA2[:, c] @ xh2[:, c].T, cols))  # [4u, D+1+u]
        G *= quarter[:, None]
        grads = {"kernel": np.empty_like(w["kernel"]), "recurrent_kernel": np.empty_like(w["recurrent_kernel"]),
                 "bias": np.empty_like(w["bias"])}
        grads["kernel"][:, order] = G[:, :D].T
        grads["bias"][order] = G[:, D]
        grads["recurrent_kernel"][:, order] = G[:, D1:].T
        dx = None
        if need_dx:
            WpT = np.ascontiguousarray((w["kernel"][:, order] * quarter).T)
            dx2 = np.empty((T * N, D), dtype=S.dtype)
            parallel.run(lambda c: np.matmul(dA2[:, c].T, WpT, out=dx2[c]), cols)
            dx = dx2.reshape(T, N, D).transpose(1, 0, 2)
        return dx, grads


class Gru(_Recurrent):
    """GRU, Keras gate order z, r, h, recurrent activation sigmoid, activation tanh,
    h_t = z*h_{t-1} + (1-z)*h~.
    reset_after=True (Keras 3's default): bias [2, 3u], row 0 for the input, row 1 for the
        recurrent projection; h~ = tanh(x Wh + b_in_h + r * (h Wrh + b_rec_h)).
    reset_after=False: bias [3u]; h~ = tanh(x Wh + (r*h) Wrh + b_h).
    As in the LSTM, states are transposed ([units, batch]) so each gate is a contiguous block.
    Given the forward, dL/dh_{t-1} is linear in dL/dh_t, so the backward loop is a product and
    a few multiplies; the factors are precomputed over all steps."""

    def __init__(self, layer):
        super().__init__(layer)
        self.reset_after = layer.options["reset_after"]

    def forward(self, x, w, training=False, rng=None):
        N, T, D = x.shape
        u = self.units
        bias = w["bias"]
        b_in = bias[0] if self.reset_after else bias
        xT = np.ascontiguousarray(x.transpose(1, 2, 0))  # [T, D, N]
        Z = np.matmul(np.ascontiguousarray(w["kernel"].T), xT)  # [T, 3u, N], every step at once
        Z += b_in[:, None]
        dt = Z.dtype
        Ut = np.ascontiguousarray(w["recurrent_kernel"].T)  # [3u, u]
        H = np.zeros((T + 1, u, N), dtype=dt)
        R = np.empty((T, u, N), dtype=dt)  # reset_after: h Wrh + b_rec_h;  else r * h_{t-1}
        rec = np.empty((3 * u, N), dtype=dt)
        tmp = np.empty((u, N), dtype=dt)
        with BLAS.one_thread():  # the per-step products are too small to share
            for t in range(T):
                a = Z[t]  # becomes z, r (sigmoid) and h~ (tanh)
                zr, hh = a[: 2 * u], a[2 * u :]
                if self.reset_after:
                    np.matmul(Ut, H[t], out=rec)
                    zr += rec[: 2 * u]
                    zr += bias[1, : 2 * u, None]
                    np.add(rec[2 * u :], bias[1, 2 * u :, None], out=R[t])
                    zr[:] = sigmoid(zr)
                    np.multiply(zr[u:], R[t], out=tmp)
                else:
                    np.matmul(Ut[: 2 * u], H[t], out=rec[: 2 * u])
                    zr += rec[: 2 * u]
                    zr[:] = sigmoid(zr)
                    np.multiply(zr[u:], H[t], out=R[t])
                    np.matmul(Ut[2 * u :], R[t], out=tmp)
                hh += tmp
                np.tanh(hh, out=hh)
                h = H[t + 1]  # h = h~ + z * (h_{t-1} - h~)
                np.subtract(H[t], hh, out=h)
                h *= zr[:u]
                h += hh
        y = H[1:].transpose(2, 0, 1).copy() if self.return_sequences else H[-1].T.copy()
        return y, (xT, H, Z, R)

    def backward(self, dy, w, cache, need_dx=True):
        xT, H, Z, R = cache
        T, D, N = xT.shape
        u = self.units
        U = w["recurrent_kernel"]  # [u, 3u]: dL/dh_{t-1} = U @ (gradient of the recurrent product)
        W = w["kernel"]
        z, r, hh = Z[:, :u], Z[:, u : 2 * u], Z[:, 2 * u :]
        dt = Z.dtype
        # per unit of dh: dA_z = dh * (h_{t-1} - h~) z(1-z);  dA_h = dh * (1-z)(1-h~^2)
        Pz = (H[:-1] - hh) * z * (1 - z)
        Ph = (1 - z) * (1 - hh * hh)
        if self.return_sequences:
            dHs = np.ascontiguousarray(dy.transpose(1, 2, 0))  # [T, u, N]
            dh = np.zeros((u, N), dtype=dt)
        else:
            dh = np.ascontiguousarray(dy.T)
        tmp = np.empty((u, N), dtype=dt)
        xg = xT.transpose(1, 0, 2).reshape(D, T * N)  # [D, (step, sample)], as in the LSTM
        hp = H[:-1].transpose(1, 0, 2).reshape(u, T * N)  # h_{t-1}: [u, (step, sample)]
        grads = {}
        if self.reset_after:
            # the recurrent product (h Wrh + b_rec) sees dA_z, dA_r and dA_h * r;
            # dA_r = dA_h * (h Wrh + b_rec_h) * r(1-r)
            Prec = np.empty((T, 3, u, N), dtype=dt)
            Prec[:, 0] = Pz
            np.multiply(Ph * R, r * (1 - r), out=Prec[:, 1])
            np.multiply(Ph, r, out=Prec[:, 2])
            dRec = np.empty((3 * u, T, N), dtype=dt)  # gate-major: weight gradients are one product
            dRec4 = dRec.reshape(3, u, T, N)
            dAh = np.empty((u, T, N), dtype=dt)  # the input side of h~ (without r)
            with BLAS.one_thread():  # the per-step products are too small to share
                for t in range(T - 1, -1, -1):
                    if self.return_sequences:
                        dh += dHs[t]
                    np.multiply(Prec[t], dh, out=dRec4[:, :, t])
                    np.multiply(Ph[t], dh, out=dAh[:, t])
                    np.multiply(dh, z[t], out=tmp)
                    dh = U @ dRec[:, t]
                    dh += tmp
            dRec2, dAh2 = dRec.reshape(3 * u, T * N), dAh.reshape(u, T * N)
            dzr2 = dRec2[: 2 * u]
            dk = np.empty_like(W)
            dk[:, : 2 * u] = (dzr2 @ xg.T).T
            dk[:, 2 * u :] = (dAh2 @ xg.T).T
            grads["kernel"] = dk
            grads["recurrent_kernel"] = (dRec2 @ hp.T).T
            grads["bias"] = np.stack([np.concatenate([dzr2.sum(axis=1), dAh2.sum(axis=1)]), dRec2.sum(axis=1)])
            if need_dx:
                dx2 = dzr2.T @ W[:, : 2 * u].T
                dx2 += dAh2.T @ W[:, 2 * u :].T
        else:
            Hrr = H[:-1] * r * (1 - r)  # dA_r = d(r*h) * h_{t-1} * r(1-r)
            Uzr, Uh = np.ascontiguousarray(U[:, : 2 * u]), np.ascontiguousarray(U[:, 2 * u :])
            dA = np.empty((3 * u, T, N), dtype=dt)
            with BLAS.one_thread():  # the per-step products are too small to share
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
            dA2 = dA.reshape(3 * u, T * N)
            rh = R.transpose(1, 0, 2).reshape(u, T * N)
            grads["kernel"] = (dA2 @ xg.T).T
            grads["recurrent_kernel"] = np.concatenate([(dA2[: 2 * u] @ hp.T).T, (dA2[2 * u :] @ rh.T).T], axis=1)
            grads["bias"] = dA2.sum(axis=1)
            if need_dx:
                dx2 = dA2.T @ W.T
        dx = dx2.reshape(T, N, D).transpose(1, 0, 2) if need_dx else None
        return dx, grads


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
from . import kernels_conv as _kernels_conv, kernels_more as _kernels_more  # noqa: E402

KERNELS.update(_kernels_conv.KERNELS)
KERNELS.update(_kernels_more.KERNELS)
