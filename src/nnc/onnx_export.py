"""Lowering a checked model to an ONNX graph.

One function per layer kind, `lower_<kind>`, found by name (tests/onnx fails when a kind in
nnc.kinds.KINDS lacks one). Each takes the graph being built, the layer, the value flowing in
and the layer's weights in Keras layouts, and returns the value flowing out.

Layout: the graph input is the spec's own channels-last tensor with a symbolic batch axis.
ONNX's Conv and pools are channels-first, so a run of conv/pool layers is wrapped in one
Transpose in and one Transpose out, taken lazily: a value is moved to channels-last only when
a layer that needs it (flatten, dense, recurrent, the graph output) reads it. Values are named
after the layer that produces them: `conv2d_1` is channels-last, exactly the shape nnc
reports; `conv2d_1.nchw` (or `.ncw` in 1-D) is the same tensor channels-first.

Keras semantics that need care are commented where they are lowered: `same` padding with the
odd pixel at the end, flatten in channels-last order, Keras's gate orders against ONNX's.

The graph is encoded by nnc.onnx_proto, not by onnx, so `nnc compile` never imports onnx:
`build` gives an `Encoded` model that `save` writes; `to_onnx` parses the same bytes into an
onnx.ModelProto for callers that want one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import __version__, onnx_proto
from .onnx_proto import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, SUPPORTED_OPSETS  # (there: no numpy for the CLI options)
from .errors import UserError
from .model import Layer, Model

if TYPE_CHECKING:
    import onnx

EXTERNAL_DATA_KEY = "nnc.external_data"
"""Metadata of a model whose weights are in a side file: its name, size and SHA-256."""
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

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        if name in self._names:  # pragma: no cover - a lowering bug, not a user error
            raise ValueError(f"duplicate node name {name}")
        self._names.add(name)
        self.nodes.append(onnx_proto.node(op, inputs, [output], name, **attrs))
        return output

    def node_multi(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> list[str]:
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
    g.node("Transpose", [x.name], out.name, f"{layer.name}/to_channels_first", perm=[0, n + 1, *range(1, n + 1)])
    return out


def channels_last(g: Graph, x: Value, consumer: str) -> Value:
    if not x.first:
        return x
    n = x.spatial
    out = Value(x.layer, x.layer, x.shape)
    g.node("Transpose", [x.name], out.name, f"{consumer}/to_channels_last", perm=[0, *range(2, n + 2), 1])
    g.declare(out)
    return out


def activate(g: Graph, pre: str, x_first: bool, activation: str, out: str, layer: str) -> str:
    """Apply a Keras activation; softmax is over the channels (the last axis in Keras)."""
    if activation == "linear":
        return g.node("Identity", [pre], out, f"{layer}/Identity") if pre != out else out
    if activation == "softmax":
        return g.node("Softmax", [pre], out, f"{layer}/Softmax", axis=1 if x_first else -1)
    op = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[activation]
    return g.node(op, [pre], out, f"{layer}/{op}")


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
    g.node("Conv", inputs, pre, f"{layer.name}/Conv", kernel_shape=list(layer.options["kernel"]),
           strides=list(layer.options["stride"]), pads=_onnx_pads(layer), dilations=[1] * n, group=1)
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


def _activation_layer(g: Graph, layer: Layer, x: Value) -> Value:
    suffix = _SUFFIX[x.spatial] if x.first else ""
    out = Value(layer.name + suffix, layer.name, layer.output_shape, first=x.first)
    activate(g, x.name, x.first, layer.kind, out.name, layer.name)
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


_RNN_ACTIVATION = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}


def _recurrent(g: Graph, layer: Layer, x: Value, op: str, W: np.ndarray, R: np.ndarray, B: np.ndarray,
               **attrs) -> Value:
    """Run an ONNX RNN/LSTM/GRU node on a channels-last [batch, steps, features] value.

    The operators read layout 0, [steps, batch, features]: layout=1 would spare the transposes
    but onnxruntime's CUDA provider rejects it."""
    units = layer.options["units"]
    name = layer.name
    x = channels_last(g, x, name)
    seq = g.node("Transpose", [x.name], f"{name}/time_major", f"{name}/to_time_major", perm=[1, 0, 2])
    # ONNX weights: W [dirs, gates*units, in], R [dirs, gates*units, units], B [dirs, 2*gates*units]
    inputs = [seq, g.const(f"{name}.W", W.T[None]), g.const(f"{name}.R", R.T[None]), g.const(f"{name}.B", B[None])]
    out = Value(name, name, layer.output_shape)
    outputs = [f"{name}/Y", f"{name}/Y_h"] + ([f"{name}/Y_c"] if op == "LSTM" else [])
    g.node_multi(op, inputs, outputs, f"{name}/{op}", hidden_size=units, direction="forward", layout=0, **attrs)
    if layer.options["return_sequences"]:
        # Y is [steps, dirs=1, batch, units] -> [batch, steps, units]
        y = g.node("Squeeze", [outputs[0], g.ints(f"{name}/dir_axis", [1])], f"{name}/Y_squeezed", f"{name}/Squeeze")
        g.node("Transpose", [y], out.name, f"{name}/to_batch_major", perm=[1, 0, 2])
    else:
        # Y_h is the last step's state, [dirs=1, batch, units] -> [batch, units]
        g.node("Squeeze", [outputs[1], g.ints(f"{name}/dir_axis", [0])], out.name, f"{name}/Squeeze")
    g.declare(out)
    return out


def _unrolled_rnn(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    """SimpleRNN with an activation the ONNX RNN operator lacks (softmax), unrolled over the
    steps the spec fixes: h_t = act(x_t W + b + h_{t-1} R), h_0 = 0."""
    name = layer.name
    x = channels_last(g, x, name)
    steps = x.shape[0]
    act = layer.options["activation"]
    xw = g.node("MatMul", [x.name, g.const(f"{name}.kernel", w["kernel"])], f"{name}/xw", f"{name}/input_MatMul")
    xwb = g.node("Add", [xw, g.const(f"{name}.bias", w["bias"])], f"{name}/xwb", f"{name}/input_Add")
    rk = g.const(f"{name}.recurrent_kernel", w["recurrent_kernel"])
    states = []
    h = None
    for t in range(steps):
        # x_t: Gather with a scalar index drops the steps axis: [batch, units]
        xt = g.node("Gather", [xwb, g.const(f"{name}/t{t}", np.array(t, dtype=np.int64))], f"{name}/x{t}",
                    f"{name}/step{t}/Gather", axis=1)
        if h is None:
            pre = xt
        else:
            hr = g.node("MatMul", [h, rk], f"{name}/hr{t}", f"{name}/step{t}/MatMul")
            pre = g.node("Add", [xt, hr], f"{name}/pre{t}", f"{name}/step{t}/Add")
        h = activate(g, pre, False, act, f"{name}/h{t}", f"{name}/step{t}")
        if layer.options["return_sequences"]:
            states.append(g.node("Unsqueeze", [h, g.ints(f"{name}/step{t}/uaxis", [1])], f"{name}/hs{t}",
                                 f"{name}/step{t}/Unsqueeze"))
    out = Value(name, name, layer.output_shape)
    if layer.options["return_sequences"]:
        g.node("Concat", states, out.name, f"{name}/Concat", axis=1)
    else:
        g.node("Identity", [h], out.name, f"{name}/Identity")
    g.declare(out)
    return out


def lower_rnn(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    act = layer.options["activation"]
    if act == "softmax":
        return _unrolled_rnn(g, layer, x, w)
    attrs = {}
    if act == "linear":  # ONNX's Affine(alpha=1, beta=0) is the identity
        attrs = dict(activations=["Affine"], activation_alpha=[1.0], activation_beta=[0.0])
    else:
        attrs = dict(activations=[_RNN_ACTIVATION[act]])
    bias = np.concatenate([w["bias"], np.zeros_like(w["bias"])])  # Keras has one bias: Wb = b, Rb = 0
    return _recurrent(g, layer, x, "RNN", w["kernel"], w["recurrent_kernel"], bias, **attrs)


def lower_lstm(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    # Keras's gate blocks are i, f, c, o; ONNX's are i, o, f, c.
    u = layer.options["units"]
    order = [0, 3, 1, 2]
    W = _keras_to_onnx_gates(w["kernel"], order, u)
    R = _keras_to_onnx_gates(w["recurrent_kernel"], order, u)
    b = _keras_to_onnx_gates(w["bias"], order, u)
    bias = np.concatenate([b, np.zeros_like(b)])
    return _recurrent(g, layer, x, "LSTM", W, R, bias)


def lower_gru(g: Graph, layer: Layer, x: Value, w: dict[str, np.ndarray]) -> Value:
    # Keras and ONNX agree on the gate order z, r, h.
    if layer.options["reset_after"]:
        # Keras's bias [2, 3u] is (input bias, recurrent bias), and the recurrent bias sits inside
        # the reset product: r * (h R + b_r). That is ONNX's linear_before_reset=1.
        bias = np.concatenate([w["bias"][0], w["bias"][1]])
        lbr = 1
    else:
        bias = np.concatenate([w["bias"], np.zeros_like(w["bias"])])
        lbr = 0
    return _recurrent(g, layer, x, "GRU", w["kernel"], w["recurrent_kernel"], bias, linear_before_reset=lbr)


# --- the model ------------------------------------------------------------------------------------


def lowering(kind: str) -> Callable[[Graph, Layer, Value, dict], Value]:
    """The lowering function of a kind, by name: `lower_<kind>`."""
    fn = globals().get(f"lower_{kind}")
    if fn is None:  # pragma: no cover - tests/onnx fails first
        raise NotImplementedError(f"nnc.onnx_export has no lower_{kind}")
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
    """The ONNX model of a checked `model` with `weights` (Keras layouts, as nnc.weights gives),
    encoded; `save` writes it."""
    if opset not in SUPPORTED_OPSETS:
        raise UserError(f"opset {opset} is not supported: nnc writes opsets {MIN_OPSET} to {MAX_OPSET} "
                        f"(default {DEFAULT_OPSET})", exit_code=2)
    g = Graph(opset)
    inp = model.input
    x = Value(inp.name, inp.name, inp.shape)
    for layer in model.layers:
        w = {k.split(".", 1)[1]: np.asarray(weights[k], dtype=np.float32)
             for k in (f"{layer.name}.{n}" for n in layer.weights)}
        x = lowering(layer.kind)(g, layer, x, w)
    last = model.layers[-1].name if model.layers else "output"
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
            "nnc.input": json.dumps(input_info(model), sort_keys=True),
            "nnc.output_shape": json.dumps(list(model.output_shape)),
            "nnc.layout": "channels-last",
        },
    )


_EXTERNAL_MIN = 1024 - sys.getsizeof(b"")
"""Tensors of this many bytes or more go to the data file: onnx.save_model's rule
(`size_threshold=1024` compared with `sys.getsizeof(raw_data)`, which counts the bytes object's
header), kept so that a model written here is the one onnx would write."""


@dataclass
class Encoded:
    """An ONNX model as nnc writes it: nodes and value infos encoded (nnc.onnx_proto), weights
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
    """The ONNX model of a checked `model` with `weights` (Keras layouts, as nnc.weights gives),
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
    from .weights import atomic_open

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

    from .weights import atomic_open

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
