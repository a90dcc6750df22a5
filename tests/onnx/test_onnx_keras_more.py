"""Keras 3 (backend torch) against the ONNX graph on the details of "More kinds and options"
that are easy to get wrong by one row: transposed convolutions' output length and crops for
odd and even kernels and strides (kinds.transpose_out, kinds.transpose_pads), `same` padding of
dilated convolutions, causal padding with strides, bilinear upsampling's half-pixel weights.
Every case builds the one-layer spec, gives Keras the same weights and compares outputs.

Skips cleanly when Keras is not installed (`pip install -e .[reference]`); CI installs it."""

from __future__ import annotations

import os

import pytest

os.environ["KERAS_BACKEND"] = "torch"
pytest.importorskip("torch")
pytest.importorskip("keras")

from nnc.lang.checker import check_source  # noqa: E402
from nnc.onnx import export as ox  # noqa: E402

from keras_twin import keras_predict  # noqa: E402
from onnx_cases import assert_close, ort_run, random_input, random_weights  # noqa: E402

pytestmark = [pytest.mark.reference, pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


def _agree(texts: list[str]) -> None:
    for i, text in enumerate(texts):
        r = check_source(f"model m\n{text}\n")
        assert r.ok, (text, [d.message for d in r.diagnostics])
        model = r.model
        w = random_weights(model, seed=i)
        x = random_input(model, batch=2, seed=i + 1)
        expected = keras_predict(model, w, x)  # Keras's own shape: nnc's must be it
        assert expected.shape[1:] == model.output_shape, text
        assert_close(ort_run(ox.to_onnx(model, w), x), expected, rtol=1e-5, what=text)


def test_transposed_convolutions_1d():
    _agree([f"input x: float32[4, 2]\nconv1d_transpose 2 kernel={k} stride={s} padding={p}"
            for k in (1, 2, 3, 4, 5) for s in (1, 2, 3) for p in ("valid", "same")])


def test_transposed_convolutions_2d():
    _agree([f"input x: float32[3, 4, 2]\nconv2d_transpose 2 kernel={k} stride={s} padding={p}"
            for k, s in (("3x4", "2x3"), ("2x5", "3x2"), ("4x1", "2")) for p in ("valid", "same")])


def test_dilated_same_and_causal_padding():
    _agree([f"input x: float32[9, 2]\nconv1d 2 kernel={k} dilation={d} padding=same" for k in (2, 3, 4) for d in (2, 3)]
           + [f"input x: float32[9, 2]\nconv1d 2 kernel={k} stride={s} padding=causal"
              for k in (2, 3) for s in (1, 2, 3)]
           + ["input x: float32[7, 8, 2]\nconv2d 2 kernel=2x3 dilation=3x2 padding=same",
              "input x: float32[7, 8, 2]\ndepthwise_conv2d kernel=4 dilation=2 padding=same",
              "input x: float32[9, 2]\nseparable_conv1d 3 kernel=2 dilation=3 padding=same",
              # depthwise and separable (not conv) take a stride and a dilation together
              "input x: float32[9, 8, 2]\ndepthwise_conv2d kernel=3 stride=2 dilation=2 padding=same",
              "input x: float32[10, 2]\nseparable_conv1d 3 kernel=2 stride=3 dilation=2 padding=same",
              "input x: float32[10, 2]\ndepthwise_conv1d kernel=3 stride=2 dilation=2"])


def test_bilinear_upsampling():
    _agree([f"input x: float32[3, 5, 2]\nupsampling2d {s} interpolation=bilinear" for s in ("2", "3x2", "1x4", "4x1")])
