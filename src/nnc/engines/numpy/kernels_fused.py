"""A convolution and the max pooling right after it, as one kernel (Network fuses the two steps).

When a maxpool's windows tile the convolution's output (stride == pool size, no padding: the
lecture's `conv2d ... activation=relu` then `maxpool2d 2`, the relu moved after the pool by
Network), the pool reads each convolution output exactly once, or not at all (the rows and
columns past the last whole window). So the convolution computes its outputs in the pool's
order: the rows of its column matrix (im2col) are grouped by window offset,

    rows [offset a of the pool window, sample, pooled position q]    (conv output q*pool + a)

and the product's output [window, n * pooled * filters] is a stack of blocks, one per pool window
offset, each laid out as the pooled output. The pool is then a running maximum of whole
contiguous blocks, its gradient a masked copy of dy into each block (the first maximum of each
window, in row-major window order, as kernels.MaxPool and TensorFlow and PyTorch give it), and
the weight gradient takes those blocks as they are, with the columns in the same row order.
Unlike the two steps apart, no strided pass over the convolution's output (channels are only
16-64 values long there, so each strided pass runs many short inner loops), no zero-filled
input gradient for the pool, and the convolution outputs that the pool drops are never computed.

The input gradient needs no column matrix either: one product per convolution tap, dz [rows,
filters] @ that tap's kernel slice [filters, in], each added where the tap read the input (one
strided slice per pool offset). Each product is rows x in, small enough to stay in cache, where
col2im's column gradient (taps times larger) goes out to memory and back.

A first layer with few columns (3x3 taps of one grey-scale channel) keeps its column matrix
transposed, [columns, rows]: im2col then copies long runs, and the two products run faster.
"""

from __future__ import annotations

from itertools import product
from math import prod

import numpy as np

from nnc.engines.numpy.kernels import Conv, MaxPool


class ConvMaxPool:
    """conv1d/conv2d (kernels.Conv: any stride, padding, dilation; one group) then a max pool
    whose windows tile its output (`fits`). forward/backward as the kernel protocol: y is the
    pooled output, the gradients are the convolution's (kernel, bias)."""

    def __init__(self, conv: Conv, pool: MaxPool):
        self.conv, self.pool = conv, pool
        self.filters = conv.filters
        self.use_bias = conv.use_bias
        self.k = pool.window  # pool window = pool stride
        self.p = pool.out  # pooled grid
        self.blocks = list(product(*(range(k) for k in self.k)))  # pool window offsets, row-major
        # pool offset a, pooled position q: conv output q*k + a, whose window starts in the
        # padded input at (q*k + a) * stride: base a*stride, step k*stride
        self.steps = tuple(k * s for k, s in zip(self.k, conv.strides))

    @staticmethod
    def fits(conv, pool) -> bool:
        return (type(conv) is Conv and type(pool) is MaxPool and conv.groups == 1
                and pool.strides == pool.window and not pool.padded
                and len(pool.window) == len(conv.out) and tuple(pool.spatial_in) == tuple(conv.out))

    # --- columns ---------------------------------------------------------------------------

    def _transposed(self, c: int) -> bool:
        """Few columns (a first layer on grey-scale images: 3x3 taps of one channel): the column
        matrix is built and kept transposed, [columns, rows], so that im2col copies long runs
        of one channel, and the products read it as they run fastest."""
        return c <= 2 and prod(self.conv.window) * c <= 16

    def im2col_t(self, x):
        """[prod(window) * in (+1), blocks * n * prod(p)]: im2col's matrix transposed."""
        conv = self.conv
        xp = conv.pad(x)
        n, c = x.shape[0], x.shape[-1]
        kk = prod(conv.window) * c
        cols = np.empty((kk + self.use_bias, len(self.blocks), n) + self.p, dtype=x.dtype)
        if self.use_bias:
            cols[kk] = 1
        taps = cols[:kk].reshape((len(conv.offsets), c, len(self.blocks), n) + self.p)
        for b, a in enumerate(self.blocks):
            base = xp[(slice(None),) + tuple(slice(o * s, None) for o, s in zip(a, conv.strides))]
            for t, start in enumerate(conv.starts):
                np.copyto(taps[t, :, b], np.moveaxis(base[self._slices(start)], -1, 0))
        return cols.reshape(kk + self.use_bias, -1)

    def im2col(self, x):
        """[blocks * n * prod(p), prod(window) * in (+1)]: rows in (pool offset, sample, q)
        order, each row in Keras's kernel order, as kernels.Conv.im2col."""
        conv = self.conv
        xp = np.ascontiguousarray(conv.pad(x))
        n, c = x.shape[0], x.shape[-1]
        d = len(self.p)
        kk = prod(conv.window) * c
        cols = np.empty((len(self.blocks), n) + self.p + (kk + self.use_bias,), dtype=x.dtype)
        if self.use_bias:
            cols[..., kk] = 1
        st = xp.strides
        strided = conv.window[-1] * c >= 16 and conv.dilation[-1] == 1
        for b, a in enumerate(self.blocks):
            base = xp[(slice(None),) + tuple(slice(o * s, None) for o, s in zip(a, conv.strides))]
            body = cols[b, ..., :kk]
            if strided:
                # along the last spatial axis a window's elements and channels are contiguous
                # (kw*in values): one copy from a strided view [n, *p, *window[:-1], kw*in]
                shape = (n,) + self.p + conv.window[:-1] + (conv.window[-1] * c,)
                strides = ((st[0],) + tuple(st[1 + i] * self.steps[i] for i in range(d))
                           + tuple(st[1 + i] * conv.dilation[i] for i in range(d - 1)) + (st[-1],))
                view = np.lib.stride_tricks.as_strided(base, shape, strides, writeable=False)
                np.copyto(np.reshape(body, shape, copy=False), view)
            else:  # few channels: one copy per window offset, over the whole batch
                blocks = np.reshape(body, (n,) + self.p + conv.window + (c,), copy=False)
                lead = (slice(None),) * (1 + d)
                for off, start in zip(conv.offsets, conv.starts):
                    blocks[lead + off] = base[self._slices(start)]
        return cols.reshape(-1, kk + self.use_bias)

    def _slices(self, start):
        """The slice, from a pool offset's base, that conv window tap `start` reads for every q."""
        return (slice(None),) + tuple(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(start, self.steps, self.p)) + (
            slice(None),
        )

    # --- forward and backward --------------------------------------------------------------

    def forward(self, x, w, training=False, rng=None):
        if self._transposed(x.shape[-1]):
            cols = self.im2col_t(x)
            z = cols.T @ self.conv._matrix(w)
        else:
            cols = self.im2col(x)
            z = cols @ self.conv._matrix(w)
        z = z.reshape(len(self.blocks), -1)  # the conv outputs, block by block
        y = z[0].copy()
        for b in range(1, len(self.blocks)):
            np.maximum(y, z[b], out=y)
        return y.reshape((x.shape[0],) + self.p + (self.filters,)), (cols, z, y, x.shape)

    def backward(self, dy, w, cache, need_dx=True):
        cols, z, y, xshape = cache
        kernel = w["kernel"]
        dz = self._pool_grad(z, y, dy.reshape(-1))
        dz2 = dz.reshape(-1, self.filters)
        transposed = self._transposed(xshape[-1])
        g = cols @ dz2 if transposed else (dz2.T @ cols).T  # [columns, filters]
        grads = {"kernel": g[: len(g) - self.use_bias].reshape(kernel.shape)}
        if self.use_bias:
            grads["bias"] = g[-1].copy()
        if not need_dx:
            return None, grads
        conv = self.conv
        n, c = xshape[0], xshape[-1]
        dxp = np.zeros(conv.padded_shape(n, c), dtype=dy.dtype)
        kt = kernel.reshape(-1, c, self.filters).transpose(0, 2, 1)  # [taps, filters, in]
        shape = (len(self.blocks), n) + self.p + (c,)
        for i, start in enumerate(conv.starts):
            t = (dz2 @ kt[i]).reshape(shape)
            for b, a in enumerate(self.blocks):
                first = tuple(o * s + st for o, s, st in zip(a, conv.strides, start))
                dxp[self._slices(first)] += t[b]
        return conv.unpad(dxp), grads

    def _pool_grad(self, z, y, dy):
        """dL/dz [blocks, m] from the pooled dy [m]: dy goes to the first block (window offset,
        row-major) that holds the window's maximum."""
        eq = z == y  # [blocks, m]
        if np.count_nonzero(eq) > y.size:  # some window has its maximum twice: keep the first
            taken = eq[0].copy()
            for b in range(1, len(self.blocks)):
                np.greater(eq[b], taken, out=eq[b])  # eq & ~taken
                taken |= eq[b]
        return np.multiply(eq, dy, dtype=dy.dtype)
