"""The fused convolution + max pooling kernel (nnc.engines.numpy.kernels_fused.ConvMaxPool), and
the plain convolution kernel beside it, against the plain definitions written out here in float64: a convolution as a sum over its taps at every output
position, a max pool that sends each window's gradient to its first maximum (row-major), and
their gradients by the chain rule, position by position. Tolerance 1e-10 (float64 rounding).

The cases cover strides, `same`/`valid`/`causal` padding, dilation, rectangular kernels and
pools, 1-D and 2-D, one to eight channels (both im2col layouts: transposed for few columns,
the strided copy for many), convolution outputs the pool drops (odd sizes), and ties: a blank
region of the input makes every window there hold its maximum more than once.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import nnc
from nnc.engines.numpy import Network
from nnc.engines.numpy.kernels_fused import ConvMaxPool


def _pads(size, k, s, d, padding):
    span = (k - 1) * d + 1
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return span - 1, 0
    total = max((math.ceil(size / s) - 1) * s + span - size, 0)  # same: the odd pixel at the end
    return total // 2, total - total // 2


def ref_conv(x, kernel, bias, strides, dilation, padding):
    """y[n, o, f] = sum over taps t and channels c of xp[n, o*s + t*d, c] * kernel[t, c, f] + bias."""
    window = kernel.shape[:-2]
    pads = [_pads(n, k, s, d, padding) for n, k, s, d in zip(x.shape[1:-1], window, strides, dilation)]
    xp = np.pad(x, [(0, 0)] + pads + [(0, 0)])
    out = [(n + b + e - (k - 1) * d - 1) // s + 1 for n, (b, e), k, s, d in zip(x.shape[1:-1], pads, window, strides, dilation)]
    y = np.zeros((x.shape[0], *out, kernel.shape[-1]))
    for o in itertools.product(*(range(n) for n in out)):
        for t in itertools.product(*(range(k) for k in window)):
            at = tuple(oi * s + ti * d for oi, ti, s, d in zip(o, t, strides, dilation))
            y[(slice(None), *o)] += xp[(slice(None), *at)] @ kernel[t]
    if bias is not None:
        y += bias
    return y, xp, pads, out


def ref_conv_backward(dy, x, xp, pads, out, kernel, strides, dilation):
    window = kernel.shape[:-2]
    dk = np.zeros_like(kernel)
    dxp = np.zeros_like(xp)
    for o in itertools.product(*(range(n) for n in out)):
        for t in itertools.product(*(range(k) for k in window)):
            at = tuple(oi * s + ti * d for oi, ti, s, d in zip(o, t, strides, dilation))
            dk[t] += xp[(slice(None), *at)].T @ dy[(slice(None), *o)]
            dxp[(slice(None), *at)] += dy[(slice(None), *o)] @ kernel[t].T
    inner = tuple(slice(b, b + n) for (b, _), n in zip(pads, x.shape[1:-1]))
    return dk, dy.sum(axis=tuple(range(dy.ndim - 1))), dxp[(slice(None), *inner)]


def ref_maxpool(a, pool):
    """Valid max pooling with stride == pool; argmax: the first maximum of each window, row-major."""
    out = [n // k for n, k in zip(a.shape[1:-1], pool)]
    y = np.zeros((a.shape[0], *out, a.shape[-1]))
    first = {}
    for o in itertools.product(*(range(n) for n in out)):
        win = a[(slice(None), *(slice(oi * k, oi * k + k) for oi, k in zip(o, pool)))]
        flat = win.reshape(a.shape[0], -1, a.shape[-1])
        arg = flat.argmax(axis=1)  # numpy's argmax: the first maximum
        y[(slice(None), *o)] = np.take_along_axis(flat, arg[:, None], axis=1)[:, 0]
        first[o] = arg
    return y, first


def ref_maxpool_backward(dy, a_shape, pool, first):
    da = np.zeros(a_shape)
    n, c = a_shape[0], a_shape[-1]
    for o, arg in first.items():
        taps = list(itertools.product(*(range(k) for k in pool)))
        for i in range(n):
            for ch in range(c):
                t = taps[arg[i, ch]]
                da[(i, *(oi * k + ti for oi, k, ti in zip(o, pool, t)), ch)] += dy[(i, *o, ch)]
    return da


def reference(x, w, conv, pool, act):
    """Keras's order: conv, activation, pool; dL/d(everything) for dL/dy = R."""
    kernel, bias = w["kernel"], w.get("bias")
    z, xp, pads, out = ref_conv(x, kernel, bias, conv["stride"], conv["dilation"], conv["padding"])
    a = np.maximum(z, 0) if act == "relu" else z
    if pool is None:
        return a, lambda R: ref_conv_backward(R * (z > 0) if act == "relu" else R, x, xp, pads, out, kernel,
                                              conv["stride"], conv["dilation"])
    y, first = ref_maxpool(a, pool)

    def back(R):
        da = ref_maxpool_backward(R, a.shape, pool, first)
        dz = da * (z > 0) if act == "relu" else da
        return ref_conv_backward(dz, x, xp, pads, out, kernel, conv["stride"], conv["dilation"])

    return y, back


def _opts(dims, kernel, stride=1, dilation=1, padding="valid"):
    tup = lambda v: (v,) * dims if isinstance(v, int) else v  # noqa: E731
    return {"kernel": tup(kernel), "stride": tup(stride), "dilation": tup(dilation), "padding": padding}


def _spec(v):
    return v if isinstance(v, int) else "x".join(map(str, v))


# (input shape, filters, conv options, use_bias, activation, pool or None)
CASES = [
    ((9, 8, 2), 3, _opts(2, 3), True, None, (2, 2)),  # 7x6 outputs: the pool drops a row
    ((10, 9, 6), 4, _opts(2, 3), True, "relu", (2, 2)),  # many columns: the strided im2col
    ((11, 9, 3), 5, _opts(2, (2, 3), stride=2, padding="same"), False, None, (2, 1)),
    ((12, 11, 8), 3, _opts(2, 3, dilation=2, padding="same"), True, "relu", (3, 3)),
    ((17, 16, 1), 8, _opts(2, 3), True, "relu", (2, 2)),  # one channel: the transposed columns
    ((15, 13, 2), 4, _opts(2, 2, stride=(1, 2)), False, None, (3, 2)),
    ((13, 4), 3, _opts(1, 3), True, None, (2,)),
    ((14, 8), 3, _opts(1, 3, stride=2, padding="causal"), True, "relu", (3,)),
    ((16, 1), 2, _opts(1, 5, dilation=2, padding="same"), True, None, (2,)),
    # plain convolutions (no pool after them): kernels.Conv, im2col and col2im
    ((9, 8, 17), 5, _opts(2, 3, padding="same"), True, "relu", None),
    ((10, 9, 4), 3, _opts(2, (3, 2), dilation=(2, 1)), False, None, None),
    ((11, 5), 4, _opts(1, 4, padding="same"), True, None, None),
]


def _model(shape, filters, conv, use_bias, act, pool):
    dims = len(shape) - 1
    line = (f"conv{dims}d {filters} kernel={_spec(conv['kernel'])} stride={_spec(conv['stride'])} "
            f"dilation={_spec(conv['dilation'])} padding={conv['padding']} use_bias={str(use_bias).lower()}")
    if act:
        line += f" activation={act}"
    if pool is not None:
        line += f"\nmaxpool{dims}d {_spec(pool)}"
    return nnc.loads(f"model t\ninput x: float32[{', '.join(map(str, shape))}]\n{line}\n")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[2]['kernel']}-{c[2]['stride']}-{c[2]['padding']}-{c[5]}")
def test_conv_and_pool_match_the_plain_definition(case):
    shape, filters, conv, use_bias, act, pool = case
    model = _model(*case)
    rng = np.random.default_rng(0)
    w = {k: rng.normal(scale=0.5, size=s) for k, s in model.weight_shapes().items()}
    x = rng.normal(size=(3, *shape))
    x[0, : shape[0] // 2] = 0.0  # a blank region: its conv outputs are all the bias, ties in every window
    x.flags.writeable = False  # no kernel writes into its input or its dy (numpy raises if one does)
    net = Network(model, w, dtype=np.float64, threads=1)
    fused = [s for s in net.steps if isinstance(s.kernel, ConvMaxPool)]
    assert len(fused) == (pool is not None)
    y = net.forward(x, training=True)
    R = rng.normal(size=y.shape)
    R.flags.writeable = False
    grads = net.backward(R, need_input_grad=True)

    lw = {"kernel": w["conv2d_1.kernel" if len(shape) == 3 else "conv1d_1.kernel"]}
    if use_bias:
        lw["bias"] = w["conv2d_1.bias" if len(shape) == 3 else "conv1d_1.bias"]
    y_ref, back = reference(x, lw, conv, pool, act)
    dk, db, dx = back(R)
    name = "conv2d_1" if len(shape) == 3 else "conv1d_1"
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads[f"{name}.kernel"], dk, rtol=1e-10, atol=1e-12)
    if use_bias:
        np.testing.assert_allclose(grads[f"{name}.bias"], db, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.input_grad, dx, rtol=1e-10, atol=1e-12)


def test_only_a_pool_that_tiles_the_conv_output_right_after_it_is_fused():
    def fused(body, shape="[10, 10, 3]"):
        net = Network(nnc.loads(f"model t\ninput x: float32{shape}\n{body}\n"), _weights(body, shape))
        return [type(s.kernel).__name__ for s in net.steps]

    assert fused("conv2d 4 kernel=3 activation=relu\nmaxpool2d 2") == ["ConvMaxPool", "Activation"]
    assert fused("conv2d 4 kernel=3\nmaxpool2d 2") == ["ConvMaxPool"]
    assert fused("conv2d 4 kernel=3 activation=tanh\nmaxpool2d 2") == ["Conv", "Activation", "MaxPool"]
    assert fused("conv2d 4 kernel=3\nmaxpool2d 2 stride=1") == ["Conv", "MaxPool"]  # overlapping windows
    assert fused("conv2d 4 kernel=3\nmaxpool2d 3 padding=same") == ["Conv", "MaxPool"]  # padded (8 -> 9)
    assert fused("conv2d 4 kernel=3 groups=1\nconv2d 4 kernel=3 groups=2\nmaxpool2d 2") == ["Conv", "Conv", "MaxPool"]
    assert fused("conv2d_transpose 4 kernel=3\nmaxpool2d 2") == ["ConvTranspose", "MaxPool"]
    assert fused("conv2d 4 kernel=3\navgpool2d 2") == ["Conv", "AvgPool"]


def _weights(body, shape):
    model = nnc.loads(f"model t\ninput x: float32{shape}\n{body}\n")
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in model.weight_shapes().items()}


def test_fused_kernel_computes_in_float32_and_agrees_with_the_unfused_steps():
    body = "conv2d 16 kernel=3 activation=relu\nmaxpool2d 2\nconv2d 8 kernel=3 activation=relu\nmaxpool2d 2\nflatten\ndense 3"
    model = nnc.loads(f"model t\ninput x: float32[28, 28, 1]\n{body}\n")
    w = _weights(body, "[28, 28, 1]")
    rng = np.random.default_rng(1)
    x = rng.random((5, 28, 28, 1), dtype=np.float32)
    net = Network(model, w)
    assert sum(isinstance(s.kernel, ConvMaxPool) for s in net.steps) == 2
    z = net.forward(x, training=True)
    g = net.backward(np.ones_like(z))
    assert z.dtype == np.float32 and all(v.dtype == np.float32 for v in g.values())
    # the same model in float64: float32 rounding apart, the same numbers
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    net64 = Network(model, w64, dtype=np.float64)
    z64 = net64.forward(x.astype(np.float64), training=True)
    g64 = net64.backward(np.ones_like(z64))
    np.testing.assert_allclose(z, z64, rtol=1e-4, atol=1e-4)
    for k in g:
        np.testing.assert_allclose(g[k], g64[k], rtol=1e-3, atol=1e-3 * np.abs(g64[k]).max())
