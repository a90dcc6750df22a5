"""NumPy forward and backward for More convolutions and spatial reshaping: separable, depthwise and transposed
convolutions, dilated, grouped and causal convolutions, upsampling, zero padding, cropping.

Same protocol as nnc.engines.numpy.kernels (read its docstring); KERNELS here is merged into its registry.

Dilation, groups and causal padding are options of kernels.Conv itself (its im2col reads dilated
taps, groups are one batched matrix product). The kinds here:
  - a depthwise convolution is a grouped one with a group per input channel; it sums so few
    products per output that it runs as one multiply-add per window offset over the whole batch
    (the offsets and padding of kernels._Windowed, dilation included), not as im2col;
  - a separable convolution is that depthwise step (no bias) then a 1x1 convolution, one matrix
    product;
  - a transposed convolution is the adjoint of a convolution: its forward is a convolution's
    input gradient (col2im of x @ kernel^T), its backward a convolution's forward (im2col).
    The adjoint convolution reads this layer's output, padded by kinds' transpose crops, with the
    layer's kernel and stride, and produces an array of the layer's input size.
"""

from __future__ import annotations

from itertools import product
from math import floor

import numpy as np

from nnc.engines.numpy.kernels import Conv, _window_slices, _Windowed

# --- depthwise and separable convolutions ------------------------------------------------------


class DepthwiseConv(_Windowed):
    """depthwise_conv1d/2d, kernel [*window, in, depth_multiplier], output channel c*dm + m.
    This is a grouped convolution with one group per input channel, but each output element sums
    only prod(window) products, so im2col (a prod(window)-fold copy of the input) would cost more
    than the arithmetic: instead one multiply-add per window offset, each over the whole batch
    (a whole-batch slice of the padded input times that offset's [in, dm] kernel row), and in
    backward one einsum (kernel gradient) and one multiply-add (input gradient) per offset."""

    def __init__(self, layer, use_bias: bool | None = None):
        super().__init__(layer)
        self.channels = layer.input_shape[-1]
        self.dm = layer.options["depth_multiplier"]
        self.filters = self.channels * self.dm
        self.use_bias = layer.options["use_bias"] if use_bias is None else use_bias
        lead = "nhw"[: 1 + len(self.out)]  # batch and spatial axes
        self.kernel_sum = f"{lead}c,{lead}c->c"

    def forward(self, x, w, training=False, rng=None):
        c, dm = self.channels, self.dm
        xp = self.pad(x)
        kernel = w["kernel"].reshape(-1, c, dm)
        # accumulated as [dm, n, *out, c]: every multiply-add runs along the contiguous channels
        acc = np.zeros((dm, x.shape[0]) + self.out + (c,), dtype=x.dtype)
        tmp = np.empty_like(acc[0])
        for i, start in enumerate(self.starts):
            s = xp[_window_slices(start, self.strides, self.out)]
            for m in range(dm):
                np.multiply(s, kernel[i, :, m], out=tmp)
                acc[m] += tmp
        y = np.moveaxis(acc, 0, -1).reshape(acc.shape[1:-1] + (self.filters,))  # channel c*dm + m
        if self.use_bias:
            y += w["bias"]
        return y, (xp, x.shape)

    def backward(self, dy, w, cache, need_dx=True):
        xp, xshape = cache
        c, dm = self.channels, self.dm
        kernel = w["kernel"].reshape(-1, c, dm)
        d = np.ascontiguousarray(np.moveaxis(dy.reshape(dy.shape[:-1] + (c, dm)), -1, 0))  # [dm, n, *out, c]
        gk = np.empty_like(kernel)
        dxp = np.zeros(xp.shape, dtype=dy.dtype) if need_dx else None
        for i, start in enumerate(self.starts):
            sl = _window_slices(start, self.strides, self.out)
            s = xp[sl]
            for m in range(dm):
                gk[i, :, m] = np.einsum(self.kernel_sum, s, d[m])
                if need_dx:
                    dxp[sl] += d[m] * kernel[i, :, m]
        grads = {"kernel": gk.reshape(w["kernel"].shape)}
        if self.use_bias:
            grads["bias"] = dy.reshape(-1, self.filters).sum(axis=0)
        return (self.unpad(dxp) if need_dx else None), grads


class SeparableConv:
    """separable_conv1d/2d: the depthwise step (depthwise_kernel, no bias; the layer's stride,
    padding and dilation) then the pointwise one (pointwise_kernel [1.., in*dm, filters], bias)."""

    def __init__(self, layer):
        self.depthwise = DepthwiseConv(layer, use_bias=False)
        self.mid = self.depthwise.filters
        self.filters = layer.options["filters"]
        self.use_bias = layer.options["use_bias"]

    def forward(self, x, w, training=False, rng=None):
        h, cache = self.depthwise.forward(x, {"kernel": w["depthwise_kernel"]})
        h2 = h.reshape(-1, self.mid)
        y = h2 @ w["pointwise_kernel"].reshape(self.mid, self.filters)
        if self.use_bias:
            y += w["bias"]
        return y.reshape(h.shape[:-1] + (self.filters,)), (h2, cache)

    def backward(self, dy, w, cache, need_dx=True):
        h2, dcache = cache
        pw = w["pointwise_kernel"]
        dy2 = dy.reshape(-1, self.filters)
        grads = {"pointwise_kernel": (h2.T @ dy2).reshape(pw.shape)}
        if self.use_bias:
            grads["bias"] = dy2.sum(axis=0)
        dh = (dy2 @ pw.reshape(self.mid, self.filters).T).reshape(dy.shape[:-1] + (self.mid,))
        dx, gd = self.depthwise.backward(dh, {"kernel": w["depthwise_kernel"]}, dcache, need_dx)
        grads["depthwise_kernel"] = gd["kernel"]
        return dx, {k: grads[k] for k in ("depthwise_kernel", "pointwise_kernel", "bias") if k in grads}


# --- transposed convolutions ------------------------------------------------------------------


class ConvTranspose(Conv):
    """conv1d_transpose/conv2d_transpose, kernel [*window, filters, in]. The full transposed
    convolution ((size - 1) * stride + kernel long) is cropped by kinds' crops (transpose_pads);
    where Keras's output is longer than the full one (kernel < stride), the rest is zeros (then
    the bias), as Keras computes it.

    The geometry is that of the adjoint convolution: it reads this layer's output (spatial_in),
    padded by the crops (and long enough for every window), and has this layer's input size as
    its output (out). im2col and col2im are Conv's."""

    def __init__(self, layer):
        opts = layer.options
        self.window = tuple(opts["kernel"])
        self.strides = tuple(opts["stride"])
        self.spatial_in = tuple(layer.output_shape[:-1])
        self.out = tuple(layer.input_shape[:-1])
        self.pads = [tuple(p) for p in layer.spec.crops(opts, layer.input_shape)]
        # the padded length must hold every window: (size - 1) * stride + kernel
        full = [(n - 1) * s + k for n, s, k in zip(self.out, self.strides, self.window)]
        if any(b + o + e < f for (b, e), o, f in zip(self.pads, self.spatial_in, full)):
            raise ValueError(f"transposed convolution crops {self.pads} do not fit its output {self.spatial_in}")
        self.padded = any(p != (0, 0) for p in self.pads)
        self.offsets = list(product(*(range(k) for k in self.window)))
        self.dilation = (1,) * len(self.window)
        self.dilated = False
        self.starts = self.offsets
        self.filters = opts["filters"]
        self.groups = 1
        self.use_bias = False  # im2col appends no ones column: the bias is added to the output
        self.bias = opts["use_bias"]

    def forward(self, x, w, training=False, rng=None):
        kernel = w["kernel"]  # [*window, filters, in]
        n, c = x.shape[0], x.shape[-1]
        x2 = x.reshape(-1, c)
        cols = x2 @ kernel.reshape(-1, c).T  # [rows, window*filters]: what a conv's dcols are
        y = self.unpad(self.col2im(cols, n, self.filters))
        if self.bias:
            y = y + w["bias"]
        return y, (x2, x.shape)

    def backward(self, dy, w, cache, need_dx=True):
        x2, xshape = cache
        kernel = w["kernel"]
        cols = self.im2col(dy)  # [rows, window*filters]
        grads = {"kernel": (cols.T @ x2).reshape(kernel.shape)}
        if self.bias:
            grads["bias"] = dy.reshape(-1, self.filters).sum(axis=0)
        if not need_dx:
            return None, grads
        return (cols @ kernel.reshape(-1, xshape[-1])).reshape(xshape), grads


# --- upsampling, zero padding, cropping -------------------------------------------------------


def linear_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in]: linear interpolation along one axis as torch.nn.functional.interpolate
    computes it with align_corners=False (Keras 3's image.resize on the torch backend): output i
    reads source position (i + 0.5) * size_in / size_out - 0.5, clamped below at 0, between rows
    floor(src) and the next (the last row repeats at the end)."""
    a = np.zeros((size_out, size_in))
    scale = size_in / size_out
    for i in range(size_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(floor(src), size_in - 1)
        i1 = min(i0 + 1, size_in - 1)
        lam = src - i0
        a[i, i0] += 1.0 - lam
        a[i, i1] += lam
    return a


class Upsampling:
    """upsampling1d/2d. nearest: every row (column) repeated `size` times, Keras's ops.repeat;
    its gradient sums each block. bilinear (2-D): Keras 3's ops.image.resize to size * input,
    which is separable: y = A_h x A_w^T per channel, A the linear_resize_matrix of each axis; the
    gradient applies the transposes."""

    def __init__(self, layer):
        size = layer.options["size"]
        self.size = (size,) if isinstance(size, int) else tuple(size)
        self.bilinear = layer.options.get("interpolation", "nearest") == "bilinear"
        if self.bilinear:
            h, w_ = layer.input_shape[:2]
            self.ah = linear_resize_matrix(h, h * self.size[0])
            self.aw = linear_resize_matrix(w_, w_ * self.size[1])

    def forward(self, x, w, training=False, rng=None):
        if self.bilinear:
            ah, aw = self.ah.astype(x.dtype), self.aw.astype(x.dtype)
            n, h, wd, c = x.shape
            t = np.matmul(ah, x.reshape(n, h, wd * c)).reshape(n, -1, wd, c)  # rows
            return np.matmul(aw, t), x.shape  # columns: [Wo, W] @ [n, Ho, W, c]
        y = x
        for axis, s in enumerate(self.size, start=1):
            if s > 1:
                y = np.repeat(y, s, axis=axis)
        return (y if y is not x else x.copy()), x.shape

    def backward(self, dy, w, cache, need_dx=True):
        xshape = cache
        if self.bilinear:
            ah, aw = self.ah.astype(dy.dtype), self.aw.astype(dy.dtype)
            n, h, wd, c = xshape
            t = np.matmul(aw.T, dy)  # [n, Ho, W, c]
            return np.matmul(ah.T, t.reshape(n, t.shape[1], wd * c)).reshape(xshape), {}
        blocks = (xshape[0],) + tuple(v for n, s in zip(xshape[1:-1], self.size) for v in (n, s)) + (xshape[-1],)
        axes = tuple(2 + 2 * a for a in range(len(self.size)))
        return dy.reshape(blocks).sum(axis=axes), {}


class ZeroPad:
    """zeropad1d/2d: zeros around the spatial axes; the gradient is the inner slice of dy."""

    def __init__(self, layer):
        self.pads = [tuple(p) for p in layer.options["padding"]]

    def forward(self, x, w, training=False, rng=None):
        return np.pad(x, [(0, 0)] + self.pads + [(0, 0)]), x.shape

    def backward(self, dy, w, cache, need_dx=True):
        xshape = cache
        inner = tuple(slice(b, b + n) for (b, _), n in zip(self.pads, xshape[1:-1]))
        return dy[(slice(None),) + inner].copy(), {}


class Cropping:
    """cropping1d/2d: a slice of the spatial axes; the gradient is dy with zeros around it."""

    def __init__(self, layer):
        self.crops = [tuple(p) for p in layer.options["cropping"]]

    def forward(self, x, w, training=False, rng=None):
        inner = tuple(slice(b, n - e) for (b, e), n in zip(self.crops, x.shape[1:-1]))
        return x[(slice(None),) + inner].copy(), x.shape

    def backward(self, dy, w, cache, need_dx=True):
        return np.pad(dy, [(0, 0)] + self.crops + [(0, 0)]), {}


KERNELS: dict[str, type] = {
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
}
