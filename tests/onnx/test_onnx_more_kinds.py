"""The lowerings of LANGUAGE.md's "More kinds and options" (tests/onnx/more_cases.py) in every
supported opset: valid (onnx.checker, full check), shaped as nnc says by ONNX's own strict shape
inference, and computing nnc's NumPy forward pass (float64) on onnxruntime with its graph
optimizations off, so that the nodes nnc writes are the ones that run (onnxruntime would
otherwise fuse the Gelu and LayerNormalization decompositions into its own kernels). And the
operators newer than an opset are decomposed below it, native from it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import shape_inference

from nnc.engines.numpy import Network
from nnc.lang.checker import check_source
from nnc.lang.kinds import DROPOUT_KINDS
from nnc.onnx import export as ox

from more_cases import MORE_SPECS
from onnx_cases import assert_close, option_model, random_input, random_weights

_CASES: dict[str, tuple] = {}


def _case(name: str):
    """The model, weights, input and NumPy reference of a case, made once for all opsets."""
    if name not in _CASES:
        model = option_model(name)
        w = random_weights(model, seed=5)
        x = random_input(model, batch=2, seed=6)
        ref = Network(model, {k: v.astype(np.float64) for k, v in w.items()}).predict(
            x if x.dtype == np.int64 else x.astype(np.float64))
        _CASES[name] = (model, w, x, ref)
    return _CASES[name]


def _run_unoptimized(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _dims(t: onnx.TypeProto) -> list:
    return [d.dim_param or d.dim_value for d in t.tensor_type.shape.dim]


def _check_shapes(proto: onnx.ModelProto, model, what: str) -> None:
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    del bare.graph.value_info[:]  # ONNX's own rules, not the shapes nnc declared
    inferred = shape_inference.infer_shapes(bare, check_type=True, strict_mode=True, data_prop=True)
    values = list(inferred.graph.value_info) + list(inferred.graph.output)
    shapes = {v.name: _dims(v.type) for v in values}
    from_input = {proto.graph.input[0].name}  # values computed from the input (from weights alone: no batch)
    for n in proto.graph.node:
        if any(i in from_input for i in n.input):
            from_input.update(n.output)
    for v in values:
        dims = _dims(v.type)
        assert dims.count("batch") == (v.name in from_input), (what, v.name, dims)
        assert all(isinstance(d, int) and d > 0 for d in dims if d != "batch"), (what, v.name, dims)
    for layer in model.layers:
        if layer.kind in DROPOUT_KINDS:
            continue
        s = layer.output_shape
        last = shapes.get(layer.name)
        first = shapes.get(layer.name + {1: ".ncw", 2: ".nchw"}.get(len(s) - 1, "?"))
        assert last is not None or first is not None, (what, f"no value named after {layer.name}")
        assert last is None or last == ["batch", *s], (what, layer.name, last)
        assert first is None or first == ["batch", s[-1], *s[:-1]], (what, layer.name, first)


@pytest.mark.parametrize("opset", list(ox.SUPPORTED_OPSETS))
def test_more_kinds_in_every_opset(opset):
    for name in MORE_SPECS:
        model, w, x, ref = _case(name)
        proto = ox.to_onnx(model, w, opset)
        what = f"{name} at opset {opset}"
        onnx.checker.check_model(proto, full_check=True)
        _check_shapes(proto, model, what)
        assert_close(_run_unoptimized(proto, x), ref, rtol=1e-5, what=what)


DECOMPOSED = ("input x: float32[4, 6]\ndense 6 activation=gelu\ndense 6 activation=gelu_tanh\nmish\n"
              "layernorm\nlayernorm center=false scale=false")


@pytest.mark.parametrize("opset", [14, 16, 17, 18, 19, 20, ox.MAX_OPSET])
def test_operators_are_native_from_their_opset_and_decomposed_below(opset):
    model = check_source("model decomposed\n" + DECOMPOSED + "\n").model
    proto = ox.to_onnx(model, random_weights(model), opset)
    ops = [n.op_type for n in proto.graph.node]
    assert ("Gelu" in ops) == (opset >= 20) and ("Erf" in ops) == (opset < 20)
    assert ops.count("Gelu") in (0, 2)  # gelu and gelu_tanh
    assert ("Mish" in ops) == (opset >= 18) and ("Softplus" in ops) == (opset < 18)
    assert ops.count("LayerNormalization") == (2 if opset >= 17 else 0)
    assert ("ReduceMean" in ops) == (opset < 17)
    for n in proto.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Gelu":
            assert attrs["approximate"] in (b"none", b"tanh")
        if n.op_type == "ReduceMean":  # opsets 14..16: the axes are an attribute
            assert attrs["axes"] == [-1] and len(n.input) == 1


def test_keras_constants_in_the_graph():
    # selu with Keras's constants (not ONNX's defaults), leaky_relu 0.2 as a function and the
    # layer's own slope, hard_sigmoid 1/6 and 1/2, relu6's bounds as Clip inputs
    text = ("input x: float32[3]\ndense 3 activation=selu\ndense 3 activation=leaky_relu\nleaky_relu\n"
            "leaky_relu negative_slope=0.05\nelu alpha=0.7\nhard_sigmoid\nrelu6")
    model = check_source("model k\n" + text + "\n").model
    proto = ox.to_onnx(model, random_weights(model))
    attrs = [(n.op_type, {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}) for n in proto.graph.node]
    selu = next(a for op, a in attrs if op == "Selu")
    assert selu["alpha"] == pytest.approx(1.67326324) and selu["gamma"] == pytest.approx(1.05070098)
    assert [a["alpha"] for op, a in attrs if op == "LeakyRelu"] == pytest.approx([0.2, 0.3, 0.05])
    assert next(a for op, a in attrs if op == "Elu")["alpha"] == pytest.approx(0.7)
    hs = next(a for op, a in attrs if op == "HardSigmoid")
    assert hs["alpha"] == pytest.approx(1 / 6) and hs["beta"] == pytest.approx(0.5)
    clip = next(n for n in proto.graph.node if n.op_type == "Clip")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert [float(inits[i]) for i in clip.input[1:]] == [0.0, 6.0]


def test_depthwise_kernel_layout():
    # Keras [k, in, dm] -> ONNX [in * dm, 1, k], output channel c * dm + m
    model = check_source("model d\ninput x: float32[5, 2]\ndepthwise_conv1d kernel=3 depth_multiplier=3\n").model
    w = random_weights(model)
    proto = ox.to_onnx(model, w)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    kernel = inits["depthwise_conv1d_1.kernel"]
    assert kernel.shape == (6, 1, 3)
    k = w["depthwise_conv1d_1.kernel"]
    for c in range(2):
        for m in range(3):
            np.testing.assert_array_equal(kernel[c * 3 + m, 0], k[:, c, m])
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    assert next(onnx.helper.get_attribute_value(a) for a in conv.attribute if a.name == "group") == 2


@pytest.mark.parametrize("text,pads,extra", [
    # full (4-1)*2+3 = 9, Keras 8: one row cut, at the end (the smaller half at the begin)
    ("input x: float32[4, 1]\nconv1d_transpose 1 kernel=3 stride=2 padding=same", [0, 1], [0]),
    # full 3*2+5 = 11, Keras 8: three cut, one at the begin, two at the end
    ("input x: float32[4, 1]\nconv1d_transpose 1 kernel=5 stride=2 padding=same", [1, 2], [0]),
    # kernel shorter than the stride: full 3*3+2 = 11, Keras 12: a row past the end
    ("input x: float32[4, 1]\nconv1d_transpose 1 kernel=2 stride=3", [0, 0], [1]),
])
def test_transposed_convolution_crops(text, pads, extra):
    model = check_source("model t\n" + text + "\n").model
    proto = ox.to_onnx(model, random_weights(model))
    node = next(n for n in proto.graph.node if n.op_type == "ConvTranspose")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["pads"] == pads and attrs["output_padding"] == extra
