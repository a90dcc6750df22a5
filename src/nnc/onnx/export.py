"""Lowering a checked model to an ONNX graph.

One function per layer kind, `lower_<kind>`, found by name (tests/onnx fails when a kind in
nnc.lang.kinds.KINDS lacks one). Each takes the graph being built, the layer, the value flowing in
and the layer's weights in Keras layouts, and returns the value flowing out.

Layout: the graph input is the spec's own channels-last tensor with a symbolic batch axis.
ONNX's Conv and pools are channels-first, so a run of conv/pool layers is wrapped in one
Transpose in and one Transpose out, taken lazily: a value is moved to channels-last only when
a layer that needs it (flatten, dense, recurrent, the graph output) reads it. Values are named
after the layer that produces them: `conv2d_1` is channels-last, exactly the shape nnc
reports; `conv2d_1.nchw` (or `.ncw` in 1-D) is the same tensor channels-first.

Blocks (nnc.lang.model.Block): `build` walks `Model.body`; a block's branches start from the same
Value and one node joins them (`join_<merge>`), its output named after the block. Node names
carry the path of the blocks around them (`stage1/residual_2/conv2d_3/Conv`), so Netron shows
the model's tree.

Keras semantics that need care are commented where they are lowered: `same` padding with the
odd pixel at the end, flatten in channels-last order, Keras's gate orders against ONNX's.

The graph is encoded by nnc.onnx.proto, not by onnx, so `nnc compile` never imports onnx:
`build` gives an `Encoded` model that `save` writes; `to_onnx` parses the same bytes into an
onnx.ModelProto for callers that want one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from nnc import __version__
from nnc.onnx import proto as onnx_proto
from nnc.onnx.proto import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, SUPPORTED_OPSETS  # (there: no numpy for the CLI options)
from nnc.lang.errors import UserError
from nnc.lang.kinds import ACTIVATIONS, SELU_ALPHA, SELU_SCALE
from nnc.lang.model import Block, Layer, Model

if TYPE_CHECKING:
    import onnx

EXTERNAL_DATA_KEY = "nnc.external_data"
"""Metadata of a model whose weights are in a side file: its name, size and SHA-256."""
METADATA_SCHEMA_VERSION = 1
"""The version of the nnc.* metadata's schema (`nnc schema onnx-metadata`), in nnc.schema_version."""
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3
"""A protobuf message cannot exceed 2 GiB: models whose weights come near it keep them in a
side file (`OUT.onnx.data`) with ONNX external data."""
_GRAPH_MARGIN = 64 * 1024**2  # room for everything that is not a weight

BATCH = "batch"
_ONNX_DTYPE = onnx_proto.DTYPE
_SUFFIX = {1: ".ncw", 2: ".nchw"}  # channels-first value names, by number of spatial axes


@dataclass(frozen=True)
class Value:
    """A tensor in the graph being built. `first` is True when it is channels-first."""

    name: str
    layer: str  # the layer (or input) whose output this is
    shape: tuple[int, ...]  # nnc's shape, channels-last, without the batch
    first: bool = False

    @property
    def spatial(self) -> int:
        return len(self.shape) - 1


class Graph:
    """Nodes and initializers in the order they are made, so output bytes are deterministic.
    Nodes and value infos are encoded as they are made; initializers stay arrays until written."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[bytes] = []  # NodeProto
        self.initializers: list[tuple[str, np.ndarray]] = []
        self.value_info: list[tuple[str, bytes]] = []  # (name, ValueInfoProto)
        self._names: set[str] = set()
        # the path of the blocks being lowered (`stage1/residual_2/`): every node name starts with
        # it, so that a graph viewer (Netron) shows the model's tree; lowerings name nodes as if
        # at the top
        self.prefix = ""
        # layout conversions already made, by output name: a value that several branches read
        # is moved to the other layout once
        self.converted: dict[str, "Value"] = {}

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        name = self.prefix + name
        if name in self._names:  # pragma: no cover - a lowering bug, not a user error
            raise ValueError(f"duplicate node name {name}")
        self._names.add(name)
        self.nodes.append(onnx_proto.node(op, inputs, [output], name, **attrs))
        return output

    def node_multi(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> list[str]:
        name = self.prefix + name
        self._names.add(name)
        self.nodes.append(onnx_proto.node(op, inputs, outputs, name, **attrs))
        return outputs

    def const(self, name: str, array: np.ndarray) -> str:
        array = np.asarray(array)
        # ONNX's raw_data is little-endian and C-ordered (not ascontiguousarray: it turns a
        # scalar into [1])
        array = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)
        self.initializers.append((name, array))
        return name

    def ints(self, name: str, values: list[int]) -> str:
        return self.const(name, np.asarray(values, dtype=np.int64))

    def declare(self, value: Value) -> None:
        """Record a layer output's shape (from nnc) so viewers like Netron show it."""
        dims: list[int | str] = [BATCH, *value.shape]
        if value.first:
            dims = [BATCH, value.shape[-1], *value.shape[:-1]]
        self.value_info.append((value.name, onnx_proto.value_info(value.name, onnx_proto.DTYPE["float32"], dims)))


# --- layout -------------------------------------------------------------------------------------


def channels_first(g: Graph, x: Value, layer: Layer) -> Value:
    if x.first:
        return x
    n = x.spatial
    out = Value(x.layer + _SUFFIX[n], x.layer, x.shape, first=True)
    if out.name in g.converted:  # another branch of a block moved it already
        return g.converted[out.name]
    g.node("Transpose", [x.name], out.name, f"{layer.name}/to_channels_first", perm=[0, n + 1, *range(1, n + 1)])
    g.converted[out.name] = out
    return out


def channels_last(g: Graph, x: Value, consumer: str) -> Value:
    if not x.first:
        return x
    n = x.spatial
    out = Value(x.layer, x.layer, x.shape)
    if out.name in g.converted:  # another branch of a block moved it already
        return g.converted[out.name]
    g.node("Transpose", [x.name], out.name, f"{consumer}/to_channels_last", perm=[0, *range(2, n + 2), 1])
    g.declare(out)
    g.converted[out.name] = out
    return out


def _scalar(g: Graph, name: str, value: float) -> str:
    return g.const(name, np.array(value, dtype=np.float32))


_SIMPLE_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
                       "softsign": "Softsign"}


def activate(g: Graph, pre: str, x_first: bool, activation: str, out: str, layer: str,
             alpha: float | None = None) -> str:
    """Apply a Keras activation (keras.activations.NAME with its defaults; `alpha` overrides
    leaky_relu's slope and elu's alpha, for the layers). softmax and log_softmax are over the
    channels (the last axis in Keras, axis 1 of a channels-first value); every other one is
    elementwise, so it runs in either layout. Operators newer than the opset are decomposed:
    Gelu (opset 20), Mish (opset 18)."""
    if activation == "linear":
        return g.node("Identity", [pre], out, f"{layer}/Identity") if pre != out else out
    if activation in ("softmax", "log_softmax"):
        op = "Softmax" if activation == "softmax" else "LogSoftmax"
        return g.node(op, [pre], out, f"{layer}/{op}", axis=1 if x_first else -1)
    if activation in _SIMPLE_ACTIVATIONS:
        op = _SIMPLE_ACTIVATIONS[activation]
        return g.node(op, [pre], out, f"{layer}/{op}")
    if activation == "leaky_relu":  # the function's default slope is 0.2 (the layer's, 0.3)
        return g.node("LeakyRelu", [pre], out, f"{layer}/LeakyRelu", alpha=0.2 if alpha is None else float(alpha))
    if activation == "elu":
        return g.node("Elu", [pre], out, f"{layer}/Elu", alpha=1.0 if alpha is None else float(alpha))
    if activation == "selu":  # Keras's constants, not ONNX's defaults (they differ in the 8th digit)
        return g.node("Selu", [pre], out, f"{layer}/Selu", alpha=SELU_ALPHA, gamma=SELU_SCALE)
    if activation in ("silu", "swish"):  # x * sigmoid(x)
        s = g.node("Sigmoid", [pre], f"{layer}/sigmoid", f"{layer}/Sigmoid")
        return g.node("Mul", [pre, s], out, f"{layer}/Mul")
    if activation == "hard_sigmoid":  # Keras 3: relu6(x + 3) / 6 = clip(x / 6 + 1/2, 0, 1)
        return g.node("HardSigmoid", [pre], out, f"{layer}/HardSigmoid", alpha=1.0 / 6.0, beta=0.5)
    if activation == "relu6":  # Clip takes its bounds as inputs (since opset 11)
        lo, hi = _scalar(g, f"{layer}/relu6_min", 0.0), _scalar(g, f"{layer}/relu6_max", 6.0)
        return g.node("Clip", [pre, lo, hi], out, f"{layer}/Clip")
    if activation == "mish":  # x * tanh(softplus(x)); the Mish operator exists from opset 18
        if g.opset >= 18:
            return g.node("Mish", [pre], out, f"{layer}/Mish")
        sp = g.node("Softplus", [pre], f"{layer}/softplus", f"{layer}/Softplus")
        t = g.node("Tanh", [sp], f"{layer}/tanh_softplus", f"{layer}/Tanh")
        return g.node("Mul", [pre, t], out, f"{layer}/Mul")
    if activation in ("gelu", "gelu_tanh"):
        approx = activation == "gelu_tanh"
        if g.opset >= 20:  # the Gelu operator exists from opset 20
            return g.node("Gelu", [pre], out, f"{layer}/Gelu", approximate="tanh" if approx else "none")
        if approx:  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            x3 = g.node("Mul", [pre, g.node("Mul", [pre, pre], f"{layer}/x2", f"{layer}/Mul_x2")], f"{layer}/x3",
                        f"{layer}/Mul_x3")
            inner = g.node("Add", [pre, g.node("Mul", [x3, _scalar(g, f"{layer}/gelu_c", 0.044715)], f"{layer}/cx3",
                                               f"{layer}/Mul_c")], f"{layer}/inner", f"{layer}/Add_inner")
            z = g.node("Mul", [inner, _scalar(g, f"{layer}/sqrt_2_over_pi", math.sqrt(2.0 / math.pi))],
                       f"{layer}/z", f"{layer}/Mul_z")
            t = g.node("Tanh", [z], f"{layer}/tanh", f"{layer}/Tanh")
        else:  # 0.5 x (1 + erf(x / sqrt 2))
            rsqrt2 = _scalar(g, f"{layer}/rsqrt2", 1.0 / math.sqrt(2.0))
            z = g.node("Mul", [pre, rsqrt2], f"{layer}/z", f"{layer}/Mul_z")
            t = g.node("Erf", [z], f"{layer}/erf", f"{layer}/Erf")
        one_t = g.node("Add", [t, _scalar(g, f"{layer}/one", 1.0)], f"{layer}/one_plus", f"{layer}/Add_one")
        half_x = g.node("Mul", [pre, _scalar(g, f"{layer}/half", 0.5)], f"{layer}/half_x", f"{layer}/Mul_half")
        return g.node("Mul", [half_x, one_t], out, f"{layer}/Mul")
    raise NotImplementedError(f"nnc.onnx.export has no lowering of the activation {activation!r}")  # pragma: no cover


def _reduce(g: Graph, op: str, x: str, axes: list[int], out: str, name: str) -> str:
    # ReduceMean/ReduceMax took `axes` as an attribute until opset 18, as an input since.
    if g.opset >= 18:
        return g.node(op, [x, g.ints(f"{name}/axes", axes)], out, name, keepdims=0)
    return g.node(op, [x], out, name, axes=axes, keepdims=0)


# --- convolution and pooling -------------------------------------------------------------------


def _onnx_pads(layer: Layer) -> list[int]:
    # Keras `same`: the total padding is split with the odd pixel at the end (kinds.same_pads);
    # ONNX takes all the begins, then all the ends.
    pads = layer.spec.pads(layer.options, layer.input_shape)
    return [b for b, _ in pads] + [e for _, e in pads]


def _conv(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    x = channels_first(g, x, layer)
    n = x.spatial
    # Keras kernel [k..., in, filters] -> ONNX [filters, in, k...]
    kernel = np.transpose(w["kernel"], (n + 1, n, *range(n)))
    inputs = [x.name, g.const(f"{layer.name}.kernel", kernel)]
    if "bias" in w:
        inputs.append(g.const(f"{layer.name}.bias", w["bias"]))
    out = Value(layer.name + _SUFFIX[n], layer.name, layer.output_shape, first=True)
    act = layer.options["activation"]
    pre = out.name if act == "linear" else f"{layer.name}/conv"
    # groups: Keras's kernel [k..., in/groups, filters] holds each group's filters in order, as
    # ONNX's group attribute reads [filters, in/groups, k...]; causal padding is (k - 1) * d before
    g.node("Conv", inputs, pre, f"{layer.name}/Conv", kernel_shape=list(layer.options["kernel"]),
           strides=list(layer.options["stride"]), pads=_onnx_pads(layer),
           dilations=list(layer.spec.dilations(layer.options)), group=int(layer.options.get("groups", 1)))
    activate(g, pre, True, act, out.name, layer.name)
    g.declare(out)
    return out


def lower_conv1d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _conv(g, layer, x, w)


def lower_conv2d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _conv(g, layer, x, w)


def _pool(g: Graph, layer: Layer, x: Value) -> Value:
    x = channels_first(g, x, layer)
    n = x.spatial
    out = Value(layer.name + _SUFFIX[n], layer.name, layer.output_shape, first=True)
    attrs = dict(kernel_shape=list(layer.options["pool"]), strides=list(layer.spec.strides(layer.options)),
                 pads=_onnx_pads(layer))
    if layer.spec.reduce == "max":
        g.node("MaxPool", [x.name], out.name, f"{layer.name}/MaxPool", **attrs)
    else:
        # Keras averages over the pixels inside the input only: padding is not counted.
        g.node("AveragePool", [x.name], out.name, f"{layer.name}/AveragePool", count_include_pad=0, **attrs)
    g.declare(out)
    return out


def lower_maxpool1d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _pool(g, layer, x)


def lower_maxpool2d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _pool(g, layer, x)


def lower_avgpool1d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _pool(g, layer, x)


def lower_avgpool2d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _pool(g, layer, x)


def _global_pool(g: Graph, layer: Layer, x: Value, op: str) -> Value:
    out = Value(layer.name, layer.name, layer.output_shape)
    axes = list(range(2, x.spatial + 2)) if x.first else list(range(1, x.spatial + 1))
    _reduce(g, op, x.name, axes, out.name, f"{layer.name}/{op}")
    g.declare(out)
    return out


def lower_globalmaxpool(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _global_pool(g, layer, x, "ReduceMax")


def lower_globalavgpool(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _global_pool(g, layer, x, "ReduceMean")


# --- dense stack --------------------------------------------------------------------------------


def lower_flatten(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    # Keras flattens channels-last: [h, w, c] with c fastest. Flatten a channels-first tensor
    # directly and every following Dense would see its inputs permuted.
    x = channels_last(g, x, layer.name)
    out = Value(layer.name, layer.name, layer.output_shape)
    g.node("Flatten", [x.name], out.name, f"{layer.name}/Flatten", axis=1)
    g.declare(out)
    return out


def lower_dense(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    x = channels_last(g, x, layer.name)
    out = Value(layer.name, layer.name, layer.output_shape)
    act = layer.options["activation"]
    pre = out.name if act == "linear" else f"{layer.name}/linear"
    kernel = g.const(f"{layer.name}.kernel", w["kernel"])  # Keras [in, units] is what MatMul/Gemm take
    if len(x.shape) == 1:
        inputs = [x.name, kernel] + ([g.const(f"{layer.name}.bias", w["bias"])] if "bias" in w else [])
        g.node("Gemm", inputs, pre, f"{layer.name}/Gemm")
    elif "bias" in w:  # Dense on the last axis of a sequence: MatMul broadcasts over the others
        mm = g.node("MatMul", [x.name, kernel], f"{layer.name}/matmul", f"{layer.name}/MatMul")
        g.node("Add", [mm, g.const(f"{layer.name}.bias", w["bias"])], pre, f"{layer.name}/Add")
    else:
        g.node("MatMul", [x.name, kernel], pre, f"{layer.name}/MatMul")
    activate(g, pre, False, act, out.name, layer.name)
    g.declare(out)
    return out


def lower_dropout(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return x  # inference: Keras's Dropout is the identity, so the graph has no node for it


def _activation_layer(g: Graph, layer: Layer, x: Value, alpha: float | None = None) -> Value:
    # in the layout the value is in: elementwise, or over the channels (softmax, log_softmax)
    suffix = _SUFFIX[x.spatial] if x.first else ""
    out = Value(layer.name + suffix, layer.name, layer.output_shape, first=x.first)
    activate(g, x.name, x.first, layer.kind, out.name, layer.name, alpha=alpha)
    g.declare(out)
    return out


def lower_relu(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _activation_layer(g, layer, x)


def lower_sigmoid(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _activation_layer(g, layer, x)


def lower_tanh(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _activation_layer(g, layer, x)


def lower_softmax(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _activation_layer(g, layer, x)


def _lower_activation_kind(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _activation_layer(g, layer, x)


# every other activation of nnc.lang.kinds.ACTIVATIONS as a layer: lower_linear, lower_gelu, ...
for _act in ACTIVATIONS:
    if f"lower_{_act}" not in globals() and _act not in ("leaky_relu", "elu"):
        globals()[f"lower_{_act}"] = _lower_activation_kind
del _act


def lower_leaky_relu(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    # the LeakyReLU layer's own slope (default 0.3), not the function's 0.2
    return _activation_layer(g, layer, x, alpha=layer.options["negative_slope"])


def lower_elu(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _activation_layer(g, layer, x, alpha=layer.options["alpha"])


def lower_prelu(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    # PReLU: one slope per input element, alpha of the input's (channels-last) shape; on a
    # channels-first value the slopes move with it, [h, w, c] -> [c, h, w]
    alpha = w["alpha"]
    if x.first:
        alpha = np.transpose(alpha, (alpha.ndim - 1, *range(alpha.ndim - 1)))
    suffix = _SUFFIX[x.spatial] if x.first else ""
    out = Value(layer.name + suffix, layer.name, layer.output_shape, first=x.first)
    g.node("PRelu", [x.name, g.const(f"{layer.name}.alpha", alpha)], out.name, f"{layer.name}/PRelu")
    g.declare(out)
    return out


# --- normalization ------------------------------------------------------------------------------


def lower_batchnorm(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    # Inference: the moving statistics, (x - mean) / sqrt(var + eps) * gamma + beta per channel
    # (the last axis in Keras). BatchNormalization reads the channels at axis 1: a features vector
    # already has them there, a sequence or an image goes (or stays) channels-first.
    name, o = layer.name, layer.options
    c = layer.input_shape[-1]
    if len(x.shape) in (2, 3):
        x = channels_first(g, x, layer)
    if x.first or len(x.shape) == 1:
        suffix = _SUFFIX[x.spatial] if x.first else ""
        out = Value(name + suffix, name, layer.output_shape, first=x.first)
        # scale=false: gamma is 1, center=false: beta is 0 (constants named so: not weights)
        gamma = g.const(f"{name}.gamma", w["gamma"]) if o["scale"] else g.const(f"{name}/ones", np.ones(c, np.float32))
        beta = g.const(f"{name}.beta", w["beta"]) if o["center"] else g.const(f"{name}/zeros", np.zeros(c, np.float32))
        inputs = [x.name, gamma, beta, g.const(f"{name}.moving_mean", w["moving_mean"]),
                  g.const(f"{name}.moving_variance", w["moving_variance"])]
        g.node("BatchNormalization", inputs, out.name, f"{name}/BatchNormalization", epsilon=float(o["epsilon"]))
    else:  # four or more axes, channels-last: the same affine map, broadcast over the last axis, as
        # x * scale + shift with scale = gamma / sqrt(var + eps), shift = beta - mean * scale computed
        # in the graph from the weights themselves (constants, folded by runtimes), so that
        # `nnc import` gives them back
        var = g.const(f"{name}.moving_variance", w["moving_variance"])
        std = g.node("Sqrt", [g.node("Add", [var, _scalar(g, f"{name}/epsilon", o["epsilon"])], f"{name}/variance_eps",
                                     f"{name}/Add_epsilon")], f"{name}/std", f"{name}/Sqrt")
        gamma = g.const(f"{name}.gamma", w["gamma"]) if o["scale"] else g.const(f"{name}/ones", np.ones(c, np.float32))
        scale = g.node("Div", [gamma, std], f"{name}/scale", f"{name}/Div_scale")
        mean_scaled = g.node("Mul", [g.const(f"{name}.moving_mean", w["moving_mean"]), scale], f"{name}/mean_scaled",
                             f"{name}/Mul_mean")
        if o["center"]:
            beta = g.const(f"{name}.beta", w["beta"])
            shift = g.node("Sub", [beta, mean_scaled], f"{name}/shift", f"{name}/Sub_shift")
        else:
            shift = g.node("Neg", [mean_scaled], f"{name}/shift", f"{name}/Neg_shift")
        out = Value(name, name, layer.output_shape)
        y = g.node("Mul", [x.name, scale], f"{name}/scaled", f"{name}/Mul")
        g.node("Add", [y, shift], out.name, f"{name}/Add")
    g.declare(out)
    return out


def _reduce_keep(g: Graph, op: str, x: str, axes: list[int], out: str, name: str) -> str:
    # ReduceMean's axes: an attribute until opset 17, an input from opset 18
    if g.opset >= 18:
        return g.node(op, [x, g.ints(f"{name}/axes", axes)], out, name, keepdims=1)
    return g.node(op, [x], out, name, axes=axes, keepdims=1)


def lower_layernorm(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    # Keras normalizes each sample over its last axis (biased variance), then gamma and beta.
    # LayerNormalization exists from opset 17; before it, ReduceMean/Sub/Pow/Add/Sqrt/Div.
    name, o = layer.name, layer.options
    x = channels_last(g, x, name)
    c = layer.input_shape[-1]
    out = Value(name, name, layer.output_shape)
    if g.opset >= 17:  # scale=false: a gamma of ones (a constant, not a weight)
        gamma = g.const(f"{name}.gamma", w["gamma"]) if o["scale"] else g.const(f"{name}/ones", np.ones(c, np.float32))
        inputs = [x.name, gamma] + ([g.const(f"{name}.beta", w["beta"])] if o["center"] else [])
        g.node("LayerNormalization", inputs, out.name, f"{name}/LayerNormalization", axis=-1,
               epsilon=float(o["epsilon"]))
    else:
        mean = _reduce_keep(g, "ReduceMean", x.name, [-1], f"{name}/mean", f"{name}/ReduceMean")
        d = g.node("Sub", [x.name, mean], f"{name}/centered", f"{name}/Sub")
        sq = g.node("Pow", [d, _scalar(g, f"{name}/two", 2.0)], f"{name}/squared", f"{name}/Pow")
        var = _reduce_keep(g, "ReduceMean", sq, [-1], f"{name}/variance", f"{name}/ReduceMean_variance")
        eps = _scalar(g, f"{name}/epsilon", o["epsilon"])
        ve = g.node("Add", [var, eps], f"{name}/variance_eps", f"{name}/Add_epsilon")
        std = g.node("Sqrt", [ve], f"{name}/std", f"{name}/Sqrt")
        steps = [("Div", std, "normalized")]
        if o["scale"]:
            steps.append(("Mul", g.const(f"{name}.gamma", w["gamma"]), "scaled"))
        if o["center"]:
            steps.append(("Add", g.const(f"{name}.beta", w["beta"]), "shifted"))
        y = d
        for i, (op, operand, what) in enumerate(steps):
            y = g.node(op, [y, operand], out.name if i == len(steps) - 1 else f"{name}/{what}", f"{name}/{op}")
    g.declare(out)
    return out


# --- more convolutions --------------------------------------------------------------------------


def _depthwise_kernel(kernel: np.ndarray, n: int) -> np.ndarray:
    """Keras's depthwise kernel [k..., in, dm] -> ONNX's grouped [in * dm, 1, k...]: output channel
    c * dm + m is the reshape's order, and group=in gives it input channel c."""
    flat = kernel.reshape(*kernel.shape[:n], -1)
    return np.transpose(flat, (n, *range(n)))[:, None]


def _depthwise_conv(g: Graph, layer: Layer, x: Value, kernel: str, bias: str | None, out: str, node: str) -> str:
    """The grouped Conv of a depthwise step (group = input channels), with the layer's window."""
    o = layer.options
    inputs = [x.name, kernel] + ([bias] if bias is not None else [])
    return g.node("Conv", inputs, out, f"{layer.name}/{node}", kernel_shape=list(o["kernel"]),
                  strides=list(o["stride"]), pads=_onnx_pads(layer), dilations=list(layer.spec.dilations(o)),
                  group=int(x.shape[-1]))


def _depthwise_family(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    x = channels_first(g, x, layer)
    n = x.spatial
    name = layer.name
    out = Value(name + _SUFFIX[n], name, layer.output_shape, first=True)
    act = layer.options["activation"]
    pre = out.name if act == "linear" else f"{name}/conv"
    bias = g.const(f"{name}.bias", w["bias"]) if "bias" in w else None
    if layer.kind.startswith("separable"):
        # the depthwise step (no bias), then a pointwise 1x1 convolution with the bias
        dk = g.const(f"{name}.depthwise_kernel", _depthwise_kernel(w["depthwise_kernel"], n))
        mid = _depthwise_conv(g, layer, x, dk, None, f"{name}/depthwise", "depthwise_Conv")
        pk = np.transpose(w["pointwise_kernel"], (n + 1, n, *range(n)))  # [1..., mid, filters] -> [filters, mid, 1...]
        inputs = [mid, g.const(f"{name}.pointwise_kernel", pk)] + ([bias] if bias else [])
        g.node("Conv", inputs, pre, f"{name}/pointwise_Conv", kernel_shape=[1] * n, strides=[1] * n, pads=[0] * (2 * n),
               dilations=[1] * n, group=1)
    else:
        _depthwise_conv(g, layer, x, g.const(f"{name}.kernel", _depthwise_kernel(w["kernel"], n)), bias, pre, "Conv")
    activate(g, pre, True, act, out.name, name)
    g.declare(out)
    return out


def lower_separable_conv1d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _depthwise_family(g, layer, x, w)


def lower_separable_conv2d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _depthwise_family(g, layer, x, w)


def lower_depthwise_conv1d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _depthwise_family(g, layer, x, w)


def lower_depthwise_conv2d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _depthwise_family(g, layer, x, w)


def _conv_transpose(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    x = channels_first(g, x, layer)
    n = x.spatial
    name, o = layer.name, layer.options
    # Keras kernel [k..., filters, in] -> ONNX ConvTranspose's [in, filters, k...]
    kernel = np.transpose(w["kernel"], (n + 1, n, *range(n)))
    inputs = [x.name, g.const(f"{name}.kernel", kernel)] + ([g.const(f"{name}.bias", w["bias"])] if "bias" in w else [])
    # The full transposed convolution is (size - 1) * stride + kernel long; Keras's length cuts
    # kinds.crops from it (begin, end), or, when the kernel is shorter than the stride, is longer:
    # the rows past the end (bias only) are ONNX's output_padding.
    begins, ends, extra = [], [], []
    for size, k, st, (b, e), length in zip(layer.input_shape, o["kernel"], o["stride"],
                                            layer.spec.crops(o, layer.input_shape), layer.output_shape):
        full = (size - 1) * st + k
        more = length - (full - b - e)
        if more < 0:  # pragma: no cover - kinds.crops and the output shape disagree
            raise ValueError(f"{name}: crops {(b, e)} of {full} do not give {length}")
        begins.append(b)
        ends.append(e)
        extra.append(more)
    out = Value(name + _SUFFIX[n], name, layer.output_shape, first=True)
    act = o["activation"]
    pre = out.name if act == "linear" else f"{name}/conv"
    g.node("ConvTranspose", inputs, pre, f"{name}/ConvTranspose", kernel_shape=list(o["kernel"]),
           strides=list(o["stride"]), pads=begins + ends, output_padding=extra, dilations=[1] * n, group=1)
    activate(g, pre, True, act, out.name, name)
    g.declare(out)
    return out


def lower_conv1d_transpose(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _conv_transpose(g, layer, x, w)


def lower_conv2d_transpose(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _conv_transpose(g, layer, x, w)


# --- resizing, padding, cropping: in whichever layout the value is in --------------------------


def _spatial_axes(x: Value) -> list[int]:
    """The spatial axes of a value, counting the batch: 1.. channels-last, 2.. channels-first."""
    return list(range(2, x.spatial + 2)) if x.first else list(range(1, x.spatial + 1))


def _same_layout(layer: Layer, x: Value) -> Value:
    suffix = _SUFFIX[x.spatial] if x.first else ""
    return Value(layer.name + suffix, layer.name, layer.output_shape, first=x.first)


def _bilinear_taps(factor: int) -> tuple[np.ndarray, int]:
    """The kernel of bilinear upsampling by an integer factor as a transposed convolution, and the
    rows its full output loses at the begin. With half-pixel centers, as Keras 3 resizes (torch
    align_corners=False, TF half_pixel_centers), output i reads input (i + 0.5) / factor - 0.5
    with the triangle weights max(0, 1 - |distance|); centred at c0 (factor - 1/2 for an even
    factor, factor - 1 for an odd one, so the crop is whole), the taps are tri((j - c0) / factor).
    The input is first padded by one row of its own edge on each side (the clamping at the
    borders), which is why the crop is factor/2 + 1/2 + c0."""
    c0 = factor - 0.5 if factor % 2 == 0 else factor - 1
    taps = np.array([max(0.0, 1.0 - abs(j - c0) / factor) for j in range(int(2 * c0) + 1)])
    return taps, int(0.5 * factor + 0.5 + c0)


def _upsample(g: Graph, layer: Layer, x: Value, factors: list[int], bilinear: bool) -> Value:
    # Not Resize: its shape inference loses the batch's name (scales multiply it by 1.0); with an
    # integer factor both upsamplings are simple, and cost what Resize costs.
    name = layer.name
    out = _same_layout(layer, x)
    axes = _spatial_axes(x)
    if not bilinear:
        # Keras repeats each row (ops.repeat): a new axis after each spatial one, broadcast to the
        # factor, then folded into it
        unsq_axes = [a + i + 1 for i, a in enumerate(axes)]
        u = g.node("Unsqueeze", [x.name, g.ints(f"{name}/axes", unsq_axes)], f"{name}/unsqueezed", f"{name}/Unsqueeze")
        rank = x.spatial + 2 + len(axes)
        target = [1] * rank
        for a, f in zip(unsq_axes, factors):
            target[a] = f
        e = g.node("Expand", [u, g.ints(f"{name}/repeats", target)], f"{name}/repeated", f"{name}/Expand")
        dims = [x.shape[-1], *layer.output_shape[:-1]] if x.first else list(layer.output_shape)
        g.node("Reshape", [e, g.ints(f"{name}/shape", [0, *dims])], out.name, f"{name}/Reshape")
    else:
        # bilinear: the edge-padded input through a depthwise transposed convolution whose kernel
        # is the outer product of each axis's _bilinear_taps (channels-first: group = channels)
        x = channels_first(g, x, layer)
        out = _same_layout(layer, x)
        c = layer.input_shape[-1]
        taps, crops = zip(*(_bilinear_taps(f) for f in factors))
        kernel = np.einsum("i,j->ij", *taps) if len(taps) == 2 else taps[0]
        kernel = np.broadcast_to(kernel, (c, 1, *kernel.shape)).astype(np.float32)
        n = x.spatial
        pads = g.ints(f"{name}/pads", [0, 0] + [1] * n + [0, 0] + [1] * n)
        padded = g.node("Pad", [x.name, pads], f"{name}/edge_padded", f"{name}/Pad", mode="edge")
        # the full output of size + 2 rows is (size + 1) * factor + kernel long: `crop` rows are cut
        # at the begin, the rest past size * factor at the end
        ends = [(size + 1) * f + len(t) - crop - size * f
                for size, f, t, crop in zip(layer.input_shape, factors, taps, crops)]
        g.node("ConvTranspose", [padded, g.const(f"{name}/bilinear_kernel", kernel)], out.name, f"{name}/ConvTranspose",
               kernel_shape=list(kernel.shape[2:]), strides=list(factors), pads=list(crops) + ends, group=c,
               dilations=[1] * n)
    g.declare(out)
    return out


def lower_upsampling1d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _upsample(g, layer, x, [layer.options["size"]], False)


def lower_upsampling2d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _upsample(g, layer, x, list(layer.options["size"]), layer.options["interpolation"] == "bilinear")


def _zeropad(g: Graph, layer: Layer, x: Value) -> Value:
    out = _same_layout(layer, x)
    rank = x.spatial + 2
    begins, ends = [0] * rank, [0] * rank
    for axis, (b, e) in zip(_spatial_axes(x), layer.options["padding"]):
        begins[axis], ends[axis] = b, e
    g.node("Pad", [x.name, g.ints(f"{layer.name}/pads", begins + ends)], out.name, f"{layer.name}/Pad", mode="constant")
    g.declare(out)
    return out


def lower_zeropad1d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _zeropad(g, layer, x)


def lower_zeropad2d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _zeropad(g, layer, x)


def _crop(g: Graph, layer: Layer, x: Value) -> Value:
    out = _same_layout(layer, x)
    axes = _spatial_axes(x)
    crops = layer.options["cropping"]
    starts = [b for b, _ in crops]
    ends = [size - e for size, (_, e) in zip(layer.input_shape, crops)]
    n = layer.name
    g.node("Slice", [x.name, g.ints(f"{n}/starts", starts), g.ints(f"{n}/ends", ends), g.ints(f"{n}/axes", axes)],
           out.name, f"{n}/Slice")
    g.declare(out)
    return out


def lower_cropping1d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _crop(g, layer, x)


def lower_cropping2d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return _crop(g, layer, x)


# --- reshaping ----------------------------------------------------------------------------------


def lower_reshape(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    # Keras reshapes the channels-last tensor; 0 keeps the batch, the rest is nnc's output shape
    # (the -1 already resolved)
    x = channels_last(g, x, layer.name)
    out = Value(layer.name, layer.name, layer.output_shape)
    g.node("Reshape", [x.name, g.ints(f"{layer.name}/shape", [0, *layer.output_shape])], out.name,
           f"{layer.name}/Reshape")
    g.declare(out)
    return out


def lower_permute(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    x = channels_last(g, x, layer.name)  # Keras's axes are 1-based over the channels-last axes
    out = Value(layer.name, layer.name, layer.output_shape)
    g.node("Transpose", [x.name], out.name, f"{layer.name}/Transpose", perm=[0, *layer.options["axes"]])
    g.declare(out)
    return out


def lower_repeat_vector(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    # [batch, features] -> [batch, n, features]
    name = layer.name
    u = g.node("Unsqueeze", [x.name, g.ints(f"{name}/axes", [1])], f"{name}/unsqueezed", f"{name}/Unsqueeze")
    out = Value(name, name, layer.output_shape)
    # Expand broadcasts the 1 to n (Tile would multiply the batch by 1 and lose its name in ONNX's shapes)
    g.node("Expand", [u, g.ints(f"{name}/shape", [1, layer.options["n"], 1])], out.name, f"{name}/Expand")
    g.declare(out)
    return out


def lower_spatial_dropout1d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return x  # inference: the identity, as dropout


def lower_spatial_dropout2d(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    return x  # inference: the identity, as dropout


# --- attention ----------------------------------------------------------------------------------


def lower_attention(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    """Keras MultiHeadAttention as self-attention, mha(x, x), in inference (no dropout):
    q = x Wq + bq per head (einsum abc,cde->abde), scaled by 1/sqrt(key_dim); scores q k^T,
    softmax over the keys (future keys masked when causal); the values weighted by it; the
    output projection abcd,cde->abe. Heads are a batch axis: [batch, heads, steps, dim]."""
    name, o = layer.name, layer.options
    x = channels_last(g, x, name)
    steps, features = layer.input_shape
    heads, key_dim = o["heads"], o["key_dim"]
    value_dim = layer.spec.value_dim(o)

    def project(part: str, dim: int, perm: list[int]) -> str:
        kernel = g.const(f"{name}.{part}.kernel", w[f"{part}.kernel"].reshape(features, heads * dim))
        p = g.node("MatMul", [x.name, kernel], f"{name}/{part}_matmul", f"{name}/{part}/MatMul")
        if o["use_bias"]:
            p = g.node("Add", [p, g.const(f"{name}.{part}.bias", w[f"{part}.bias"].reshape(-1))],
                       f"{name}/{part}_biased", f"{name}/{part}/Add")
        p = g.node("Reshape", [p, g.ints(f"{name}/{part}/heads_shape", [0, 0, heads, dim])], f"{name}/{part}_heads",
                   f"{name}/{part}/Reshape")
        return g.node("Transpose", [p], f"{name}/{part}", f"{name}/{part}/Transpose", perm=perm)

    q = project("query", key_dim, [0, 2, 1, 3])  # [batch, heads, steps, key_dim]
    q = g.node("Mul", [q, _scalar(g, f"{name}/inverse_sqrt_key_dim", 1.0 / math.sqrt(key_dim))], f"{name}/query_scaled",
               f"{name}/query/Mul")
    k = project("key", key_dim, [0, 2, 3, 1])  # [batch, heads, key_dim, steps]
    v = project("value", value_dim, [0, 2, 1, 3])  # [batch, heads, steps, value_dim]
    scores = g.node("MatMul", [q, k], f"{name}/scores", f"{name}/scores/MatMul")  # [batch, heads, query, key]
    if o["causal"]:  # key s > query t gets -inf: a zero weight after the softmax
        mask = np.triu(np.full((steps, steps), -np.inf, dtype=np.float32), k=1)
        scores = g.node("Add", [scores, g.const(f"{name}/causal_mask", mask)], f"{name}/scores_masked",
                        f"{name}/causal/Add")
    p = g.node("Softmax", [scores], f"{name}/weights", f"{name}/Softmax", axis=-1)
    ctx = g.node("MatMul", [p, v], f"{name}/context", f"{name}/context/MatMul")  # [batch, heads, steps, value_dim]
    ctx = g.node("Transpose", [ctx], f"{name}/context_steps", f"{name}/context/Transpose", perm=[0, 2, 1, 3])
    ctx = g.node("Reshape", [ctx, g.ints(f"{name}/context/shape", [0, 0, heads * value_dim])], f"{name}/context_flat",
                 f"{name}/context/Reshape")
    out = Value(name, name, layer.output_shape)
    wo = g.const(f"{name}.attention_output.kernel", w["attention_output.kernel"].reshape(heads * value_dim, features))
    if o["use_bias"]:
        y = g.node("MatMul", [ctx, wo], f"{name}/output_matmul", f"{name}/attention_output/MatMul")
        g.node("Add", [y, g.const(f"{name}.attention_output.bias", w["attention_output.bias"])], out.name,
               f"{name}/attention_output/Add")
    else:
        g.node("MatMul", [ctx, wo], out.name, f"{name}/attention_output/MatMul")
    g.declare(out)
    return out


def lower_position_embedding(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    # x + the table's first `steps` rows (the table is [max_length, features])
    name = layer.name
    x = channels_last(g, x, name)
    steps = layer.input_shape[0]
    table = g.const(f"{name}.embeddings", w["embeddings"])  # the whole table: `nnc import` gives it back
    if w["embeddings"].shape[0] > steps:  # the rows past `steps` are never read (a constant Slice, folded)
        table = g.node("Slice", [table, g.ints(f"{name}/starts", [0]), g.ints(f"{name}/ends", [steps]),
                                 g.ints(f"{name}/axes", [0])], f"{name}/rows", f"{name}/Slice")
    out = Value(name, name, layer.output_shape)
    g.node("Add", [x.name, table], out.name, f"{name}/Add")
    g.declare(out)
    return out


# --- sequences ----------------------------------------------------------------------------------


def lower_embedding(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    out = Value(layer.name, layer.name, layer.output_shape)
    table = g.const(f"{layer.name}.embeddings", w["embeddings"])
    g.node("Gather", [table, x.name], out.name, f"{layer.name}/Gather", axis=0)
    g.declare(out)
    return out


def _keras_to_onnx_gates(a: np.ndarray, order: list[int], units: int) -> np.ndarray:
    """Reorder the gate blocks along the last axis."""
    blocks = [a[..., i * units:(i + 1) * units] for i in order]
    return np.concatenate(blocks, axis=-1)


_RNN_ACTIVATIONS = {
    "tanh": ("Tanh", None, None), "sigmoid": ("Sigmoid", None, None), "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),  # alpha * x + beta
    "leaky_relu": ("LeakyRelu", 0.2, None),  # the function's default slope
    "elu": ("Elu", 1.0, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),  # Keras 3: relu6(x + 3) / 6 = clip(x / 6 + 1/2, 0, 1)
    "softsign": ("Softsign", None, None), "softplus": ("Softplus", None, None),
}
"""Keras activations the ONNX RNN/LSTM/GRU operators compute: (name, alpha, beta); None where
the function takes none (onnxruntime hands activation_alpha/_beta out in order to the
functions that take them). The others (softmax, gelu, ...) are unrolled (_unrolled).
onnxruntime's CUDA provider runs the operators with cuDNN's tanh/sigmoid only and gives a node
with other activations to the CPU provider, so every graph computes the same everywhere."""


def _activation_attrs(names: list[str], dirs: int) -> dict | None:
    """The operator's activations (per direction, f g h order) as attributes; None when one has
    no ONNX twin."""
    if any(n not in _RNN_ACTIVATIONS for n in names):
        return None
    funcs = [_RNN_ACTIVATIONS[n] for n in names] * dirs
    attrs: dict = {"activations": [f for f, _, _ in funcs]}
    alphas = [a for _, a, _ in funcs if a is not None]
    betas = [b for _, _, b in funcs if b is not None]
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    return attrs


def _directions(layer: Layer, w: dict[str, np.ndarray]) -> list[tuple[str, dict[str, np.ndarray], bool]]:
    """(weight prefix, weights, reads backwards) of each direction: a forward one, or Keras's
    Bidirectional's forward and backward (go_backwards) copies."""
    if layer.options.get("bidirectional"):
        return [(p, {k[len(p):]: v for k, v in w.items() if k.startswith(p)}, p == "backward.")
                for p in ("forward.", "backward.")]
    return [("", w, bool(layer.options.get("go_backwards")))]


def _merge_directions(g: Graph, layer: Layer, fwd: str, bwd: str, out: str) -> str:
    """Keras's Bidirectional merge_mode on the two directions' outputs (the same shape, units last)."""
    name, merge = layer.name, layer.options.get("merge", "concat")
    if merge == "concat":
        return g.node("Concat", [fwd, bwd], out, f"{name}/merge_Concat", axis=-1)
    if merge == "sum":
        return g.node("Add", [fwd, bwd], out, f"{name}/merge_Add")
    if merge == "mul":
        return g.node("Mul", [fwd, bwd], out, f"{name}/merge_Mul")
    total = g.node("Add", [fwd, bwd], f"{name}/merge_sum", f"{name}/merge_Add")  # ave: (y + y_rev) / 2
    return g.node("Div", [total, _scalar(g, f"{name}/two", 2.0)], out, f"{name}/merge_Div")


def _reverse_steps(g: Graph, x: str, axis: int, out: str, name: str) -> str:
    """x with its steps (along `axis`) in reverse order: a Slice with step -1."""
    return g.node("Slice", [x, g.ints(f"{name}/starts", [-1]), g.ints(f"{name}/ends", [-(2**63)]),
                            g.ints(f"{name}/axes", [axis]), g.ints(f"{name}/steps", [-1])], out, name)


def _recurrent(g: Graph, layer: Layer, x: Value, op: str, Ws: list[np.ndarray], Rs: list[np.ndarray],
               Bs: list[np.ndarray], **attrs) -> Value:
    """Run an ONNX RNN/LSTM/GRU node on a channels-last [batch, steps, features] value; Ws, Rs, Bs
    hold each direction's weights (one, or Bidirectional's forward and backward).

    The operators read layout 0, [steps, batch, features]: layout=1 would spare the transposes
    but onnxruntime's CUDA provider rejects it. go_backwards is direction="reverse", whose Y is in
    the input's order: Keras 3 returns the sequence in reading order, so Y is reversed. A
    bidirectional layer's reverse half of Y is in the input's order already, as Keras's
    Bidirectional flips its backward layer's sequence; the halves are then merged."""
    units = layer.options["units"]
    name = layer.name
    bidirectional = len(Ws) == 2
    backwards = not bidirectional and bool(layer.options.get("go_backwards"))
    direction = "bidirectional" if bidirectional else "reverse" if backwards else "forward"
    x = channels_last(g, x, name)
    seq = g.node("Transpose", [x.name], f"{name}/time_major", f"{name}/to_time_major", perm=[1, 0, 2])
    # ONNX weights: W [dirs, gates*units, in], R [dirs, gates*units, units], B [dirs, 2*gates*units]
    inputs = [seq, g.const(f"{name}.W", np.stack([W.T for W in Ws])), g.const(f"{name}.R", np.stack([R.T for R in Rs])),
              g.const(f"{name}.B", np.stack(Bs))]
    out = Value(name, name, layer.output_shape)
    outputs = [f"{name}/Y", f"{name}/Y_h"] + ([f"{name}/Y_c"] if op == "LSTM" else [])
    g.node_multi(op, inputs, outputs, f"{name}/{op}", hidden_size=units, direction=direction, layout=0, **attrs)
    sequences = layer.options["return_sequences"]
    if bidirectional:
        # Y [steps, 2, batch, units] (Y_h [2, batch, units]): each direction's half, merged
        src, axis = (outputs[0], 1) if sequences else (outputs[1], 0)
        halves = [g.node("Gather", [src, g.const(f"{name}/{d}_index", np.array(i, dtype=np.int64))], f"{name}/{d}",
                         f"{name}/{d}_Gather", axis=axis) for i, d in enumerate(("forward", "backward"))]
        if not sequences:
            _merge_directions(g, layer, halves[0], halves[1], out.name)
        else:
            merged = _merge_directions(g, layer, halves[0], halves[1], f"{name}/merged")
            g.node("Transpose", [merged], out.name, f"{name}/to_batch_major", perm=[1, 0, 2])
    elif sequences:
        # Y is [steps, dirs=1, batch, units] -> [batch, steps, units]
        y = g.node("Squeeze", [outputs[0], g.ints(f"{name}/dir_axis", [1])], f"{name}/Y_squeezed", f"{name}/Squeeze")
        if backwards:  # in reading order, as Keras 3 returns it
            y = _reverse_steps(g, y, 0, f"{name}/Y_reading_order", f"{name}/reverse_Slice")
        g.node("Transpose", [y], out.name, f"{name}/to_batch_major", perm=[1, 0, 2])
    else:
        # Y_h is the last step's state, [dirs=1, batch, units] -> [batch, units]
        g.node("Squeeze", [outputs[1], g.ints(f"{name}/dir_axis", [0])], out.name, f"{name}/Squeeze")
    g.declare(out)
    return out


def _split(g: Graph, x: str, parts: int, units: int, prefix: str) -> list[str]:
    """x [..., parts*units] cut into `parts` tensors along the last axis (Split with its `split`
    input: valid in every supported opset)."""
    return g.node_multi("Split", [x, g.ints(f"{prefix}/split", [units] * parts)],
                        [f"{prefix}/part{i}" for i in range(parts)], f"{prefix}/Split", axis=-1)


def _unrolled_direction(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray], prefix: str,
                        backwards: bool) -> list[str]:
    """One direction of a recurrent layer, unrolled over the steps the spec fixes, in the
    order it reads them; its states h_t [batch, units], in that order. Keras's cells exactly:
        rnn:  h = act(x W + b + h U)
        lstm: i, f, c~, o = split(x W + b + h U);  c = ract(f)*c + ract(i)*act(c~);  h = ract(o)*act(c)
        gru:  reset_after: rec = h U + b';  h~ = act(x W_h + b_h + ract(r) * rec_h)
              else:        h~ = act(x W_h + b_h + (ract(r) * h) U_h);  h = z*h + (1-z)*h~
    h_0 = c_0 = 0, so the first step has no recurrent product."""
    kind, o, u = layer.kind, layer.options, layer.options["units"]
    act = o["activation"]
    ract = o.get("recurrent_activation", "sigmoid")
    name = layer.name
    tag = f"{name}/{prefix[:-1]}" if prefix else name  # node prefix: lstm_1/forward/step0/...
    cname = f"{name}.{prefix}"  # weight names, Keras's: lstm_1.forward.kernel
    bias = w["bias"]
    b_in = bias[0] if kind == "gru" and o["reset_after"] else bias
    xw = g.node("MatMul", [x.name, g.const(f"{cname}kernel", w["kernel"])], f"{tag}/xw", f"{tag}/input_MatMul")
    xwb = g.node("Add", [xw, g.const(f"{cname}bias" if b_in is bias else f"{cname}input_bias", b_in)], f"{tag}/xwb",
                 f"{tag}/input_Add")
    U = w["recurrent_kernel"]
    if kind == "gru" and not o["reset_after"]:
        rk_zr = g.const(f"{cname}recurrent_kernel_zr", U[:, : 2 * u])
        rk_h = g.const(f"{cname}recurrent_kernel_h", U[:, 2 * u :])
    else:
        rk = g.const(f"{cname}recurrent_kernel", U)
    if kind == "gru" and o["reset_after"]:
        b_rec = g.const(f"{cname}recurrent_bias", bias[1])
        b_rec_parts = [g.const(f"{cname}recurrent_bias_{k}", bias[1, i * u : (i + 1) * u]) for i, k in enumerate("zrh")]
    if kind == "gru":
        one = _scalar(g, f"{tag}/one", 1.0)
    steps = x.shape[0]
    order = range(steps - 1, -1, -1) if backwards else range(steps)
    states: list[str] = []
    h = c = None
    for n, t in enumerate(order):
        s = f"{tag}/step{n}"
        xt = g.node("Gather", [xwb, g.const(f"{s}/t", np.array(t, dtype=np.int64))], f"{s}/x", f"{s}/Gather", axis=1)
        if kind == "rnn":
            pre = xt if h is None else g.node("Add", [xt, g.node("MatMul", [h, rk], f"{s}/hU", f"{s}/MatMul")],
                                              f"{s}/pre", f"{s}/Add")
            h = activate(g, pre, False, act, f"{s}/h", s)
        elif kind == "lstm":
            pre = xt if h is None else g.node("Add", [xt, g.node("MatMul", [h, rk], f"{s}/hU", f"{s}/MatMul")],
                                              f"{s}/pre", f"{s}/Add")
            ai, af, ac, ao = _split(g, pre, 4, u, s)
            i = activate(g, ai, False, ract, f"{s}/i", f"{s}/i")
            gg = activate(g, ac, False, act, f"{s}/g", f"{s}/g")
            ig = g.node("Mul", [i, gg], f"{s}/ig", f"{s}/Mul_ig")
            if c is None:
                c = ig
            else:
                f = activate(g, af, False, ract, f"{s}/f", f"{s}/f")
                c = g.node("Add", [g.node("Mul", [f, c], f"{s}/fc", f"{s}/Mul_fc"), ig], f"{s}/c", f"{s}/Add_c")
            oo = activate(g, ao, False, ract, f"{s}/o", f"{s}/o")
            h = g.node("Mul", [oo, activate(g, c, False, act, f"{s}/act_c", f"{s}/act_c")], f"{s}/h", f"{s}/Mul_h")
        else:  # gru
            xz, xr, xh = _split(g, xt, 3, u, f"{s}/x")
            if o["reset_after"]:
                if h is None:
                    rz, rr, rh = b_rec_parts
                else:
                    rec = g.node("Add", [g.node("MatMul", [h, rk], f"{s}/hU", f"{s}/MatMul"), b_rec], f"{s}/rec",
                                 f"{s}/Add_rec")
                    rz, rr, rh = _split(g, rec, 3, u, f"{s}/rec")
                z = activate(g, g.node("Add", [xz, rz], f"{s}/az", f"{s}/Add_z"), False, ract, f"{s}/z", f"{s}/z")
                r = activate(g, g.node("Add", [xr, rr], f"{s}/ar", f"{s}/Add_r"), False, ract, f"{s}/r", f"{s}/r")
                ah = g.node("Add", [xh, g.node("Mul", [r, rh], f"{s}/r_rec", f"{s}/Mul_r")], f"{s}/ah", f"{s}/Add_h")
            else:
                if h is None:
                    az, ar, ah = xz, xr, xh
                else:
                    rz, rr = _split(g, g.node("MatMul", [h, rk_zr], f"{s}/hU", f"{s}/MatMul"), 2, u, f"{s}/rec")
                    az = g.node("Add", [xz, rz], f"{s}/az", f"{s}/Add_z")
                    ar = g.node("Add", [xr, rr], f"{s}/ar", f"{s}/Add_r")
                z = activate(g, az, False, ract, f"{s}/z", f"{s}/z")
                if h is not None:
                    r = activate(g, ar, False, ract, f"{s}/r", f"{s}/r")
                    rh = g.node("MatMul", [g.node("Mul", [r, h], f"{s}/rh", f"{s}/Mul_r"), rk_h], f"{s}/rhU",
                                f"{s}/MatMul_h")
                    ah = g.node("Add", [xh, rh], f"{s}/ah", f"{s}/Add_h")
            hh = activate(g, ah, False, act, f"{s}/hh", f"{s}/hh")
            new = g.node("Mul", [g.node("Sub", [one, z], f"{s}/1_z", f"{s}/Sub"), hh], f"{s}/new", f"{s}/Mul_new")
            h = new if h is None else g.node("Add", [g.node("Mul", [z, h], f"{s}/zh", f"{s}/Mul_zh"), new], f"{s}/h",
                                             f"{s}/Add_hn")
        states.append(h)
    return states


def _unrolled(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    """A recurrent layer with an activation the ONNX operators lack (_RNN_ACTIVATIONS), unrolled:
    each direction's states (_unrolled_direction), in Keras's order (go_backwards: reading
    order; a bidirectional layer's backward direction flipped back to the input's order),
    stacked into the sequence or the last state taken, then merged."""
    name = layer.name
    x = channels_last(g, x, name)
    sequences = layer.options["return_sequences"]
    outs = []
    for prefix, dw, backwards in _directions(layer, w):
        states = _unrolled_direction(g, layer, x, dw, prefix, backwards)
        tag = f"{name}/{prefix[:-1]}" if prefix else name
        if not sequences:
            outs.append(states[-1])
            continue
        if prefix == "backward.":
            states = states[::-1]  # Bidirectional flips the backward sequence to the input's order
        axis = g.ints(f"{tag}/steps_axis", [1])
        steps = [g.node("Unsqueeze", [h, axis], f"{tag}/hs{t}", f"{tag}/step{t}/Unsqueeze") for t, h in enumerate(states)]
        outs.append(g.node("Concat", steps, f"{tag}/sequence", f"{tag}/Concat", axis=1))
    out = Value(name, name, layer.output_shape)
    if len(outs) == 2:
        _merge_directions(g, layer, outs[0], outs[1], out.name)
    else:
        g.node("Identity", [outs[0]], out.name, f"{name}/Identity")
    g.declare(out)
    return out


# dropout and recurrent_dropout act in training only: the graph (inference) has none


def lower_rnn(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    dirs = _directions(layer, w)
    attrs = _activation_attrs([layer.options["activation"]], len(dirs))
    if attrs is None:
        return _unrolled(g, layer, x, w)
    # Keras has one bias: Wb = b, Rb = 0
    Bs = [np.concatenate([d["bias"], np.zeros_like(d["bias"])]) for _, d, _ in dirs]
    return _recurrent(g, layer, x, "RNN", [d["kernel"] for _, d, _ in dirs], [d["recurrent_kernel"] for _, d, _ in dirs],
                      Bs, **attrs)


def _gated_attrs(layer: Layer, dirs: int, gates: int) -> dict | None:
    """LSTM's activations f, g, h (recurrent_activation, activation, activation), GRU's f, g;
    none for Keras's defaults (the operators' own)."""
    o = layer.options
    if (o["recurrent_activation"], o["activation"]) == ("sigmoid", "tanh"):
        return {}
    return _activation_attrs([o["recurrent_activation"]] + [o["activation"]] * (gates - 1), dirs)


def lower_lstm(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    attrs = _gated_attrs(layer, len(_directions(layer, w)), 3)
    if attrs is None:
        return _unrolled(g, layer, x, w)
    # Keras's gate blocks are i, f, c, o; ONNX's are i, o, f, c.
    u = layer.options["units"]
    order = [0, 3, 1, 2]
    Ws, Rs, Bs = [], [], []
    for _, d, _ in _directions(layer, w):
        Ws.append(_keras_to_onnx_gates(d["kernel"], order, u))
        Rs.append(_keras_to_onnx_gates(d["recurrent_kernel"], order, u))
        b = _keras_to_onnx_gates(d["bias"], order, u)
        Bs.append(np.concatenate([b, np.zeros_like(b)]))
    return _recurrent(g, layer, x, "LSTM", Ws, Rs, Bs, **attrs)


def lower_gru(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    attrs = _gated_attrs(layer, len(_directions(layer, w)), 2)
    if attrs is None:
        return _unrolled(g, layer, x, w)
    # Keras and ONNX agree on the gate order z, r, h.
    Ws, Rs, Bs = [], [], []
    for _, d, _ in _directions(layer, w):
        Ws.append(d["kernel"])
        Rs.append(d["recurrent_kernel"])
        if layer.options["reset_after"]:
            # Keras's bias [2, 3u] is (input bias, recurrent bias), and the recurrent bias sits inside
            # the reset product: r * (h R + b_r). That is ONNX's linear_before_reset=1.
            Bs.append(np.concatenate([d["bias"][0], d["bias"][1]]))
        else:
            Bs.append(np.concatenate([d["bias"], np.zeros_like(d["bias"])]))
    return _recurrent(g, layer, x, "GRU", Ws, Rs, Bs, linear_before_reset=int(layer.options["reset_after"]), **attrs)


# --- blocks ---------------------------------------------------------------------------------------
# A block's branches all start from the Value flowing into it (an empty branch is that Value);
# `join_<merge>` (found by name; tests/onnx fails when a kind in nnc.lang.model.MERGES lacks one)
# joins their outputs in one node, named `BLOCK/Op` under the path of the blocks around it, into
# a Value named after the block. The join is channels-first when every branch ends channels-first
# (a run of convolutions stays channels-first through a residual), else channels-last.


def _join_inputs(g: Graph, block: Block, xs: list[Value]) -> tuple[list[Value], Value]:
    """The branches' outputs in a common layout, and the block's output Value in it."""
    first = all(x.first for x in xs)
    if not first:
        xs = [channels_last(g, x, f"{block.name}/branch_{i + 1}") for i, x in enumerate(xs)]
    suffix = _SUFFIX[len(block.output_shape) - 1] if first else ""
    return xs, Value(block.name + suffix, block.name, block.output_shape, first=first)


def _join_variadic(g: Graph, block: Block, xs: list[Value], binary: str, variadic: str) -> Value:
    xs, out = _join_inputs(g, block, xs)
    op = binary if len(xs) == 2 else variadic
    g.node(op, [x.name for x in xs], out.name, f"{block.name}/{op}")
    g.declare(out)
    return out


def join_add(g: Graph, block: Block, xs: list[Value]) -> Value:
    return _join_variadic(g, block, xs, "Add", "Sum")  # Keras Add: x0 + x1 + ...


def join_average(g: Graph, block: Block, xs: list[Value]) -> Value:
    return _join_variadic(g, block, xs, "Mean", "Mean")  # Keras Average: the sum over n


def join_maximum(g: Graph, block: Block, xs: list[Value]) -> Value:
    return _join_variadic(g, block, xs, "Max", "Max")


def join_minimum(g: Graph, block: Block, xs: list[Value]) -> Value:
    return _join_variadic(g, block, xs, "Min", "Min")


def join_subtract(g: Graph, block: Block, xs: list[Value]) -> Value:
    return _join_variadic(g, block, xs, "Sub", "Sub")  # Keras Subtract: x0 - x1, two branches


def join_multiply(g: Graph, block: Block, xs: list[Value]) -> Value:
    # ONNX's Mul takes two inputs: a left fold, as Keras's Multiply computes it
    xs, out = _join_inputs(g, block, xs)
    acc = xs[0].name
    for i, x in enumerate(xs[1:], start=2):
        last = i == len(xs)
        acc = g.node("Mul", [acc, x.name], out.name if last else f"{block.name}/product_{i}",
                     f"{block.name}/Mul" + ("" if i == 2 else f"_{i}"))
    g.declare(out)
    return out


def join_concat(g: Graph, block: Block, xs: list[Value]) -> Value:
    xs, out = _join_inputs(g, block, xs)
    rank = len(block.output_shape) + 1  # with the batch
    axis = block.options.get("axis", -1) % rank  # Keras: the batch is axis 0, -1 the last
    if out.first and axis > 0:  # channels-last axis -> channels-first: the channels move to 1
        axis = 1 if axis == rank - 1 else axis + 1
    g.node("Concat", [x.name for x in xs], out.name, f"{block.name}/Concat", axis=axis)
    g.declare(out)
    return out


def joining(merge: str) -> Callable[[Graph, Block, list[Value]], Value]:
    """The join of a merge kind, by name: `join_<merge>`."""
    fn = globals().get(f"join_{merge}")
    if fn is None:  # pragma: no cover - tests/onnx fails first
        raise NotImplementedError(f"nnc.onnx.export has no join_{merge}")
    return fn


def _lower_nodes(g: Graph, nodes: list, x: Value, weights: dict[str, np.ndarray]) -> Value:
    """Lower a stack of layers and blocks from the Value x; returns the Value flowing out."""
    for node in nodes:
        if isinstance(node, Block):
            outer = g.prefix
            g.prefix = f"{outer}{node.name}/"
            try:  # every branch starts from x (an empty branch is x)
                outs = [_lower_nodes(g, branch, x, weights) for branch in node.branches]
            finally:
                g.prefix = outer
            x = outs[0] if node.merge is None else joining(node.merge)(g, node, outs)
            continue
        w = {k.split(".", 1)[1]: np.asarray(weights[k], dtype=np.float32)
             for k in (f"{node.name}.{n}" for n in node.weights)}
        x = lowering(node.kind)(g, node, x, w)
    return x


# --- the model ------------------------------------------------------------------------------------


def lowering(kind: str) -> Callable[[Graph, Layer, Value, dict], Value]:
    """The lowering function of a kind, by name: `lower_<kind>`."""
    fn = globals().get(f"lower_{kind}")
    if fn is None:  # pragma: no cover - tests/onnx fails first
        raise NotImplementedError(f"nnc.onnx.export has no lower_{kind}")
    return fn


def input_info(model: Model) -> dict:
    """What `nnc run` needs to validate an input: stored in the model's metadata."""
    info = {"name": model.input.name, "dtype": model.input.dtype, "shape": list(model.input.shape)}
    if model.input.dtype == "int64":
        # Token ids index the first embedding's table: that is the range that must hold.
        emb = next((l for l in model.layers if l.kind == "embedding"), None)
        vocab = emb.options["vocab"] if emb is not None else model.input.vocab
        if emb is not None and model.input.vocab is not None:
            vocab = min(vocab, model.input.vocab)
        info["vocab"] = vocab
    return info


def build(model: Model, weights: dict[str, np.ndarray], opset: int = DEFAULT_OPSET) -> Encoded:
    """The ONNX model of a checked `model` with `weights` (Keras layouts, as nnc.lang.weights gives),
    encoded; `save` writes it."""
    if opset not in SUPPORTED_OPSETS:
        raise UserError(f"opset {opset} is not supported: nnc writes opsets {MIN_OPSET} to {MAX_OPSET} "
                        f"(default {DEFAULT_OPSET})", exit_code=2)
    g = Graph(opset)
    inp = model.input
    x = Value(inp.name, inp.name, inp.shape)
    x = _lower_nodes(g, model.body, x, weights)
    last = model.body[-1].name if model.body else "output"
    x = channels_last(g, x, last)
    if x.name == inp.name:  # no layers, or only dropout: the output still needs a node of its own
        x = Value(last, last, x.shape)
        g.node("Identity", [inp.name], last, f"{last}/Identity")
    out_dtype = "float32" if model.layers else inp.dtype
    return Encoded(
        nodes=g.nodes, name=model.name, initializers=g.initializers,
        inputs=[onnx_proto.value_info(inp.name, _ONNX_DTYPE[inp.dtype], [BATCH, *inp.shape])],
        outputs=[onnx_proto.value_info(x.name, _ONNX_DTYPE[out_dtype], [BATCH, *x.shape])],
        value_info=[v for name, v in g.value_info if name != x.name],
        doc_string=f"{model.name}, compiled by nnc {__version__}",
        opset=opset,
        metadata={
            "nnc.model": model.name,
            "nnc.source_sha256": model.source_sha256,
            # the spec's text: `nnc import` reads the spec back (the weights from the initializers)
            **({"nnc.source": model.source} if model.source else {}),
            "nnc.input": json.dumps(input_info(model), sort_keys=True),
            "nnc.output_shape": json.dumps(list(model.output_shape)),
            "nnc.layout": "channels-last",
            "nnc.schema_version": str(METADATA_SCHEMA_VERSION),  # of these nnc.* keys: `nnc schema onnx-metadata`
        },
    )


_EXTERNAL_MIN = 1024 - sys.getsizeof(b"")
"""Tensors of this many bytes or more go to the data file: onnx.save_model's rule
(`size_threshold=1024` compared with `sys.getsizeof(raw_data)`, which counts the bytes object's
header), kept so that a model written here is the one onnx would write."""


@dataclass
class Encoded:
    """An ONNX model as nnc writes it: nodes and value infos encoded (nnc.onnx.proto), weights
    still arrays, so that they are copied once, into the file, and can go to a side file."""

    nodes: list[bytes]
    name: str
    initializers: list[tuple[str, np.ndarray]]
    inputs: list[bytes]
    outputs: list[bytes]
    value_info: list[bytes]
    doc_string: str
    opset: int
    metadata: dict[str, str]

    def weight_bytes(self) -> int:
        return sum(a.nbytes for _, a in self.initializers)

    def chunks(self, location: str | None = None) -> tuple[list, list]:
        """The model file's bytes, in chunks; with `location`, the tensors of _EXTERNAL_MIN bytes or
        more are stored in the data file named so, at increasing offsets with no padding
        between them (as onnx.save_model writes them), and the data file's chunks come second."""
        tensors, data, offset = [], [], 0
        for name, a in self.initializers:
            raw = memoryview(a.reshape(-1).view(np.uint8))
            external = None
            if location is not None and len(raw) >= _EXTERNAL_MIN:
                external = (location, offset)
                data.append(raw)
                offset += len(raw)
            tensors.append(onnx_proto.tensor(name, a.shape, _ONNX_DTYPE[a.dtype.name], raw, external))
        graph = onnx_proto.graph(self.nodes, self.name, tensors, self.inputs, self.outputs, self.value_info,
                                 self.doc_string)
        metadata = self.metadata
        if location is not None:
            # the model names the checksum of its data file, so that `nnc run` refuses a pair that
            # two compiles wrote (one killed between the two renames) instead of loading it silently
            h = hashlib.sha256()
            for chunk in data:
                h.update(chunk)
            metadata = {**metadata, EXTERNAL_DATA_KEY: json.dumps({"location": location, "bytes": offset,
                                                                   "sha256": h.hexdigest()}, sort_keys=True)}
        model = onnx_proto.model(graph, self.opset, onnx_proto.IR_VERSION[self.opset], "nnc", __version__, 1,
                                 metadata)
        return model, data

    def to_bytes(self) -> bytes:
        return onnx_proto.join(self.chunks()[0])

    def to_proto(self) -> onnx.ModelProto:
        import onnx

        return onnx.ModelProto.FromString(self.to_bytes())


def to_onnx(model: Model, weights: dict[str, np.ndarray], opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The ONNX model of a checked `model` with `weights` (Keras layouts, as nnc.lang.weights gives),
    as an onnx.ModelProto (imports onnx; `build` and `save` do not). Parsed from the encoded
    bytes, so it is for models under protobuf's 2 GiB: `build` and `save` take larger ones."""
    return build(model, weights, opset).to_proto()


def weight_bytes(m: onnx.ModelProto | Encoded) -> int:
    if isinstance(m, Encoded):
        return m.weight_bytes()
    return sum(len(t.raw_data) for t in m.graph.initializer)


def save(m: onnx.ModelProto | Encoded, path: str, threshold: int = EXTERNAL_DATA_THRESHOLD) -> list[str]:
    """Write `m` to `path` atomically; returns the files written.

    Past `threshold` bytes of weights (2 GiB, protobuf's limit), the weights go to
    `path + '.data'` as ONNX external data. Both files are written to temporary names in the
    same folder and renamed into place, the data first, so no reader ever sees a half-written
    model."""
    from nnc.lang.weights import atomic_open

    if not isinstance(m, Encoded):
        return _save_proto(m, path, threshold)
    if m.weight_bytes() + _GRAPH_MARGIN < threshold:
        chunks, _ = m.chunks()
        with atomic_open(path) as f:
            f.writelines(chunks)
        _drop_stale_data(path)
        return [path]
    location = os.path.basename(path) + ".data"
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), location)
    chunks, data = m.chunks(location)
    with atomic_open(data_path) as f:
        f.writelines(data)
    with atomic_open(path) as f:
        f.writelines(chunks)
    return [data_path, path]


def _drop_stale_data(path: str) -> None:
    try:  # the weights of an earlier, larger model at this path are no longer read by anything
        os.unlink(path + ".data")
    except FileNotFoundError:
        pass


def _save_proto(m: onnx.ModelProto, path: str, threshold: int) -> list[str]:
    """`save` for an onnx.ModelProto (from `to_onnx` or made elsewhere), with onnx's own writer."""
    import tempfile

    import onnx

    from nnc.lang.weights import atomic_open

    if weight_bytes(m) + _GRAPH_MARGIN < threshold:
        with atomic_open(path) as f:
            f.write(m.SerializeToString())
        _drop_stale_data(path)
        return [path]
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    location = os.path.basename(path) + ".data"
    with tempfile.TemporaryDirectory(prefix=".nnc-", dir=directory) as tmp:
        copy = onnx.ModelProto()
        copy.CopyFrom(m)  # save_model moves the tensors out of the proto it is given
        m = copy
        onnx.save_model(m, os.path.join(tmp, os.path.basename(path)), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=location, size_threshold=1024)
        for name in (location, os.path.basename(path)):
            with open(os.path.join(tmp, name), "rb+") as f:
                os.fsync(f.fileno())
            os.replace(os.path.join(tmp, name), os.path.join(directory, name))
    return [os.path.join(directory, location), path]


def compile_model(model: Model, weights: dict[str, np.ndarray], path: str, opset: int = DEFAULT_OPSET,
                  threshold: int = EXTERNAL_DATA_THRESHOLD) -> list[str]:
    """Lower and write; returns the files written. Does not import onnx."""
    return save(build(model, weights, opset), path, threshold)
