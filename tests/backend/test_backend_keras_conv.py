"""Keras parity of the NumPy kernels of nnc.engines.numpy.kernels_conv and of conv's dilation, groups
and causal padding: each case is one layer whose Keras 3 twin (backend torch) gets the same
Keras-layout weights, set variable by variable by name; the outputs must agree within 1e-5
(relative to each value, with a floor of 1e-5 times the output's scale).

Transposed convolutions are checked over a grid of odd and even kernels, strides below, equal to
and above the kernel, and both paddings: Keras's output length and crop (kinds.transpose_out,
transpose_pads) are what these cases pin down."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("torch")
keras = pytest.importorskip("keras")

import nnc  # noqa: E402
from nnc.engines.numpy import Network  # noqa: E402

# keras.ops.convert_to_numpy warns about numpy 2's copy keyword: noise from Keras, not about nnc
pytestmark = [pytest.mark.reference, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def keras_layer(layer):
    """The Keras twin of one layer (LANGUAGE.md's table), options passed by their Keras names."""
    L, o, k = keras.layers, layer.options, layer.kind
    common = dict(strides=o.get("stride"), padding=o.get("padding"), activation=o.get("activation"),
                  use_bias=o.get("use_bias"), name=layer.name)
    if k in ("conv1d", "conv2d"):
        cls = L.Conv1D if k == "conv1d" else L.Conv2D
        return cls(o["filters"], o["kernel"], dilation_rate=o["dilation"], groups=o["groups"], **common)
    if k in ("separable_conv1d", "separable_conv2d"):
        cls = L.SeparableConv1D if k.endswith("1d") else L.SeparableConv2D
        return cls(o["filters"], o["kernel"], depth_multiplier=o["depth_multiplier"], dilation_rate=o["dilation"],
                   **common)
    if k in ("depthwise_conv1d", "depthwise_conv2d"):
        cls = L.DepthwiseConv1D if k.endswith("1d") else L.DepthwiseConv2D
        return cls(o["kernel"], depth_multiplier=o["depth_multiplier"], dilation_rate=o["dilation"], **common)
    if k in ("conv1d_transpose", "conv2d_transpose"):
        cls = L.Conv1DTranspose if k == "conv1d_transpose" else L.Conv2DTranspose
        return cls(o["filters"], o["kernel"], **common)
    if k == "upsampling1d":
        return L.UpSampling1D(o["size"], name=layer.name)
    if k == "upsampling2d":
        return L.UpSampling2D(o["size"], interpolation=o["interpolation"], name=layer.name)
    if k == "zeropad1d":
        return L.ZeroPadding1D(o["padding"][0], name=layer.name)
    if k == "zeropad2d":
        return L.ZeroPadding2D(o["padding"], name=layer.name)
    if k == "cropping1d":
        return L.Cropping1D(o["cropping"][0], name=layer.name)
    if k == "cropping2d":
        return L.Cropping2D(o["cropping"], name=layer.name)
    raise AssertionError(f"no Keras twin for {k}")


def check(shape: str, line: str, seed: int = 0, batch: int = 2) -> None:
    model = nnc.loads(f"model t\ninput x: float32[{shape}]\n{line}\n")
    (layer,) = model.layers
    rng = np.random.default_rng(seed)
    weights = {k: rng.normal(scale=0.5, size=s).astype(np.float32) for k, s in model.weight_shapes().items()}
    x = rng.normal(size=(batch,) + model.input.shape).astype(np.float32)

    kl = keras_layer(layer)
    kl.build((None,) + model.input.shape)
    # weights set by name: Keras's variable names are nnc's short names, in the same layouts
    names = {v.name for v in kl.weights}
    assert names == set(layer.weights), f"{line}: Keras has weights {sorted(names)}, nnc {sorted(layer.weights)}"
    for v in kl.weights:
        assert tuple(v.shape) == layer.weights[v.name], f"{line}: {v.name} {tuple(v.shape)} != {layer.weights[v.name]}"
        v.assign(weights[f"{layer.name}.{v.name}"])
    assert kl.count_params() == layer.params, line

    expected = np.asarray(keras.ops.convert_to_numpy(kl(x)))
    actual = Network(model, weights).predict(x)
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape, f"{line}: shape {actual.shape[1:]} != Keras {expected.shape[1:]}"
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale, err_msg=line)


CASES = [
    # conv: dilation (both im2col paths), groups, causal
    ("9, 8, 2", "conv2d 3 kernel=3 dilation=2"),
    ("9, 8, 2", "conv2d 3 kernel=2x3 dilation=3x2 padding=same activation=relu"),
    ("9, 8, 8", "conv2d 4 kernel=3x2 dilation=2x1 padding=same"),
    ("9, 8, 8", "conv2d 2 kernel=2x4 dilation=2 padding=same use_bias=false"),
    ("8, 7, 4", "conv2d 6 kernel=3 groups=2 padding=same"),
    ("8, 7, 6", "conv2d 6 kernel=2 stride=2 groups=3 use_bias=false"),
    ("8, 7, 4", "conv2d 8 kernel=3 groups=4 dilation=2 padding=same activation=tanh"),
    ("12, 4", "conv1d 6 kernel=3 groups=2 stride=2 padding=same"),
    ("12, 3", "conv1d 2 kernel=3 padding=causal"),
    ("12, 3", "conv1d 2 kernel=2 dilation=4 padding=causal activation=relu"),
    ("12, 3", "conv1d 2 kernel=4 stride=3 padding=causal"),
    ("12, 3", "conv1d 4 kernel=4 dilation=2 padding=same"),
    ("12, 3", "conv1d 4 kernel=3 dilation=2"),
    # depthwise and separable
    ("8, 7, 3", "depthwise_conv2d kernel=3"),
    ("8, 7, 3", "depthwise_conv2d kernel=2x3 stride=2 padding=same depth_multiplier=2 use_bias=false"),
    ("8, 7, 3", "depthwise_conv2d kernel=4 dilation=2 padding=same depth_multiplier=3 activation=relu"),
    ("8, 7, 1", "depthwise_conv2d kernel=3 depth_multiplier=2"),
    ("12, 4", "depthwise_conv1d kernel=3 stride=2 padding=same"),
    ("12, 4", "depthwise_conv1d kernel=2 dilation=3 depth_multiplier=2"),
    ("8, 7, 3", "separable_conv2d 4 kernel=3 padding=same"),
    ("8, 7, 3", "separable_conv2d 2 kernel=2x3 stride=2 depth_multiplier=2 use_bias=false activation=tanh"),
    ("8, 7, 3", "separable_conv2d 5 kernel=3 dilation=2 padding=same"),
    ("12, 4", "separable_conv1d 3 kernel=4 stride=2 padding=same depth_multiplier=2"),
    ("12, 4", "separable_conv1d 3 kernel=3 dilation=2"),
    # transposed 2-D (the 1-D grid is test_conv1d_transpose_grid)
    ("4, 5, 3", "conv2d_transpose 2 kernel=3 stride=2 padding=same"),
    ("4, 5, 3", "conv2d_transpose 2 kernel=4 stride=2 padding=same"),
    ("4, 5, 3", "conv2d_transpose 3 kernel=3x2 stride=2x3 use_bias=false"),
    ("4, 5, 3", "conv2d_transpose 2 kernel=2x5 stride=3x2 padding=same activation=relu"),
    ("4, 5, 3", "conv2d_transpose 2 kernel=1 stride=2"),
    # upsampling, padding, cropping
    ("5, 3", "upsampling1d 3"),
    ("4, 5, 2", "upsampling2d 2x3"),
    ("4, 5, 2", "upsampling2d 2 interpolation=bilinear"),
    ("3, 5, 2", "upsampling2d 3x4 interpolation=bilinear"),
    ("5, 1, 2", "upsampling2d 1x2 interpolation=bilinear"),
    ("5, 3", "zeropad1d [2, 1]"),
    ("5, 3", "zeropad1d 2"),
    ("4, 5, 2", "zeropad2d 1x2"),
    ("4, 5, 2", "zeropad2d [0, 2, 1, 0]"),
    ("6, 3", "cropping1d [0, 2]"),
    ("6, 3", "cropping1d"),
    ("6, 5, 2", "cropping2d [1, 2, 0, 1]"),
    ("6, 5, 2", "cropping2d 1x2"),
]


@pytest.mark.parametrize("shape,line", CASES, ids=[line for _, line in CASES])
def test_layer_matches_keras(shape, line):
    check(shape, line)


def test_conv1d_transpose_grid():
    # odd and even kernels, strides below, at and above the kernel, both paddings
    failures = []
    for padding in ("valid", "same"):
        for kernel in (1, 2, 3, 4, 5):
            for stride in (1, 2, 3):
                line = f"conv1d_transpose 2 kernel={kernel} stride={stride} padding={padding}"
                try:
                    check("5, 3", line, seed=kernel * 10 + stride)
                except AssertionError as e:
                    failures.append(f"{line}: {str(e).strip()[:300]}")
    assert not failures, "\n".join(failures)
