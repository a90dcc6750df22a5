"""Importing ONNX models as specs (`nnc import MODEL.onnx`).

Two kinds of graph:

- Graphs nnc compiled. Their metadata holds the spec's text (`nnc.source`) and its SHA-256
  (`nnc.source_sha256`): the import checks the hash and the spec, and takes the weights back out
  of the graph's initializers into the checkpoint's Keras layouts, each kind by its entry in
  INVERSES (the inverse of its `lower_<kind>` in nnc.onnx.export; tests/onnx fails when a kind
  lacks one). The weights are then proved exact: the spec lowered again with them must give the
  file's initializers bit for bit.
- Other graphs (torch.onnx.export, ...): the operators are matched, along the chain from the
  input to the output, into nnc layers. Channels-first tensors (NCHW, NCW) become the spec's
  channels-last ones: convolution kernels [O, I, k...] become Keras's [k..., I, O], and a Dense
  that reads a Flatten of a channels-first tensor has its rows reordered from C,H,W to H,W,C, so
  that the outputs stay the same for the same (transposed) input. Operators that match no layer
  are reported with their type and attributes, and the spec marks their places.

Untrusted files are read safely: the model file and its external data are size-checked before
they are read, external data must lie inside the model's folder (and in initializers only), and
nothing in the file is run: no operator is executed and no onnx shape inference is asked for, the
shapes are computed here from the operators matched.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nnc.lang.errors import SpecError, UserError
from nnc.lang.kinds import KINDS, Kind
from nnc.lang.model import Layer, Model
from nnc.lang.weights import refuse_past_memory
from nnc.tools.keras_io import _NAME_RE, _RESERVED, MAX_CONFIG_BYTES, Imported, _short, _spec_name, layer_text

MAX_MODEL_BYTES = 2 * 1024**3
"""A protobuf message cannot be larger: bigger models keep their weights in external data."""
SOURCE_KEY = "nnc.source"
HASH_KEY = "nnc.source_sha256"


# --- reading a model file safely ---------------------------------------------------------------


def read_onnx(path: str):
    """The onnx.ModelProto of `path`, with its external data (if any) read into the tensors.

    The file is refused unread past 2 GiB (protobuf's limit) or the memory available; external
    data must be a regular file inside the model's folder, each tensor's bytes within it."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        size = os.stat(path).st_size
        if size > MAX_MODEL_BYTES:
            raise UserError(f"{path} is {size:,} bytes, more than an ONNX model can be (2 GiB; larger weights "
                            "go to external data); refused unread", exit_code=1)
        refuse_past_memory(size, path, "the model")
        with open(path, "rb") as f:
            data = f.read(MAX_MODEL_BYTES + 1)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        m = onnx.ModelProto.FromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is not an ONNX model: {str(e)[:200]}", exit_code=1) from None
    if not m.HasField("graph"):
        raise UserError(f"{path} is not an ONNX model: it has no graph", exit_code=1)
    _load_external(m, path)
    return m


def _load_external(m, path: str) -> None:
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    tensors = [t for t in m.graph.initializer if t.data_location == 1]  # TensorProto.EXTERNAL
    total = 0
    for t in tensors:
        entries = {e.key: e.value for e in t.external_data}
        loc = entries.get("location", "")
        try:
            offset, length = int(entries.get("offset", 0)), int(entries["length"])
        except (KeyError, ValueError):
            raise UserError(f"{path}: tensor {t.name!r} has external data without a valid offset and length",
                            exit_code=1) from None
        if not loc or os.path.isabs(loc) or "\\" in loc or ".." in loc.split("/") or "\x00" in loc:
            raise UserError(f"{path}: tensor {t.name!r} names its data {loc!r}, a path outside the model's folder; "
                            "refused", exit_code=1)
        full = os.path.realpath(os.path.join(folder, loc))
        if os.path.commonpath([full, folder]) != folder or not os.path.isfile(full):
            raise UserError(f"{path}: tensor {t.name!r}'s data {loc!r} is not a file inside the model's folder; "
                            "refused", exit_code=1)
        if offset < 0 or length < 0 or offset + length > os.path.getsize(full):
            raise UserError(f"{path}: tensor {t.name!r}'s data lies outside {loc} ({offset:,} + {length:,} bytes)",
                            exit_code=1)
        total += length
    if tensors:
        refuse_past_memory(total, path, "its external data")
    for t in tensors:
        entries = {e.key: e.value for e in t.external_data}
        full = os.path.join(folder, entries["location"])
        with open(full, "rb") as f:
            f.seek(int(entries.get("offset", 0)))
            t.raw_data = f.read(int(entries["length"]))
        del t.external_data[:]
        t.data_location = 0


def _array(t) -> np.ndarray:
    from onnx import numpy_helper

    if t.data_location == 1:  # external data anywhere but in an initializer (read by _load_external)
        where = ", ".join(e.value for e in t.external_data)[:200]
        raise UserError(f"tensor {t.name!r} keeps its data in a file ({where}); nnc reads external data of "
                        "initializers only", exit_code=1)
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 - a malformed tensor, whatever onnx raises
        raise UserError(f"tensor {t.name!r} cannot be read: {str(e)[:200]}", exit_code=1) from None


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, list):
            v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
        elif not isinstance(v, (int, float, str)):
            v = _array(v) if hasattr(v, "data_type") else f"<{type(v).__name__}>"
        out[a.name] = v
    return out


def _opset(m) -> int | None:
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)


def import_onnx(path: str) -> Imported:
    """An ONNX model as a spec and its checkpoint (nnc.tools.keras_io.Imported): the spec nnc
    compiled it from when its metadata has it, else its operators matched into layers."""
    m = read_onnx(path)
    meta = {p.key: p.value for p in m.metadata_props}
    if SOURCE_KEY in meta:
        return _import_nnc(path, m, meta)
    return _import_graph(path, m)


# --- graphs nnc compiled: the spec from the metadata, the weights from the initializers --------


class CompiledGraph:
    """A compiled graph's initializers (by name) and nodes (by name), for the inverses."""

    def __init__(self, m):
        self.arrays = {t.name: _array(t) for t in m.graph.initializer}
        self.nodes = {n.name: n for n in m.graph.node}

    def get(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise UserError(f"the graph has no initializer {name!r}, which nnc writes for this layer", exit_code=1)
        return self.arrays[name]

    def has(self, name: str) -> bool:
        return name in self.arrays

    def node(self, layer: str, op: str):
        """The node named `[BLOCKS/]LAYER/OP` (node names carry the blocks around them)."""
        tail = f"{layer}/{op}"
        for name, n in self.nodes.items():
            if name == tail or name.endswith("/" + tail):
                return n
        raise UserError(f"the graph has no node {tail!r}, which nnc writes for this layer", exit_code=1)


Inverse = Callable[[Layer, CompiledGraph], dict[str, np.ndarray]]
"""A layer's weights (names as in Layer.weights, Keras layouts) from a compiled graph."""


def _none(layer: Layer, g: CompiledGraph) -> dict[str, np.ndarray]:
    return {}


def _by_name(layer: Layer, g: CompiledGraph) -> dict[str, np.ndarray]:
    # stored under their checkpoint names, reshaped at most (attention's heads folded into the
    # columns, C order): the reshape back is exact
    return {w: g.get(f"{layer.name}.{w}").reshape(shape) for w, shape in layer.weights.items()}


def _kernel_back(a: np.ndarray) -> np.ndarray:
    """ONNX's [O, I, k...] (or ConvTranspose's [I, O, k...]) -> Keras's [k..., I, O] ([k..., O, I])."""
    n = a.ndim - 2
    return np.ascontiguousarray(np.transpose(a, (*range(2, n + 2), 1, 0)))


def _conv(layer: Layer, g: CompiledGraph) -> dict[str, np.ndarray]:
    out = {"kernel": _kernel_back(g.get(f"{layer.name}.kernel"))}
    if "bias" in layer.weights:
        out["bias"] = g.get(f"{layer.name}.bias")
    return out


def _depthwise_back(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """ONNX's grouped [in * dm, 1, k...] -> Keras's depthwise [k..., in, dm] (export._depthwise_kernel)."""
    n = a.ndim - 2
    return np.ascontiguousarray(np.transpose(a[:, 0], (*range(1, n + 1), 0))).reshape(shape)


def _depthwise(layer: Layer, g: CompiledGraph) -> dict[str, np.ndarray]:
    out = {}
    for w, shape in layer.weights.items():
        a = g.get(f"{layer.name}.{w}")
        if w in ("kernel", "depthwise_kernel"):
            out[w] = _depthwise_back(a, shape)
        elif w == "pointwise_kernel":
            out[w] = _kernel_back(a)
        else:
            out[w] = a
    return out


def _prelu(layer: Layer, g: CompiledGraph) -> dict[str, np.ndarray]:
    alpha = g.get(f"{layer.name}.alpha")
    if g.node(layer.name, "PRelu").input[0].endswith((".nchw", ".ncw")):  # moved with a channels-first value
        alpha = np.ascontiguousarray(np.transpose(alpha, (*range(1, alpha.ndim), 0)))
    return {"alpha": alpha}


_LSTM_BACK = [0, 2, 3, 1]  # Keras's gate k (i, f, c, o) is ONNX's gate _LSTM_BACK[k] (i, o, f, c)


def _gates_back(a: np.ndarray, order: list[int], units: int) -> np.ndarray:
    return np.concatenate([a[..., i * units:(i + 1) * units] for i in order], axis=-1)


def _recurrent(layer: Layer, g: CompiledGraph) -> dict[str, np.ndarray]:
    """RNN/LSTM/GRU: the operator's W, R, B [dirs, ...] (export._recurrent), or the unrolled
    graph's per-direction constants (export._unrolled_direction)."""
    kind, o, name = layer.kind, layer.options, layer.name
    u = o["units"]
    prefixes = ["forward.", "backward."] if o.get("bidirectional") else [""]
    reset_after = kind == "gru" and o["reset_after"]
    out: dict[str, np.ndarray] = {}
    operator = g.has(f"{name}.W")
    for d, p in enumerate(prefixes):
        if operator:
            kernel, rec, b = g.get(f"{name}.W")[d].T, g.get(f"{name}.R")[d].T, g.get(f"{name}.B")[d]
            gates = b.shape[0] // 2
            if kind == "lstm":
                kernel, rec = _gates_back(kernel, _LSTM_BACK, u), _gates_back(rec, _LSTM_BACK, u)
                bias = _gates_back(b[:gates], _LSTM_BACK, u)
            elif reset_after:
                bias = np.stack([b[:gates], b[gates:]])
            else:
                bias = b[:gates]
        else:
            c = f"{name}.{p}"
            kernel = g.get(f"{c}kernel")
            if kind == "gru" and not o["reset_after"]:
                rec = np.concatenate([g.get(f"{c}recurrent_kernel_zr"), g.get(f"{c}recurrent_kernel_h")], axis=1)
            else:
                rec = g.get(f"{c}recurrent_kernel")
            bias = np.stack([g.get(f"{c}input_bias"), g.get(f"{c}recurrent_bias")]) if reset_after \
                else g.get(f"{c}bias")
        out[f"{p}kernel"] = np.ascontiguousarray(kernel)
        out[f"{p}recurrent_kernel"] = np.ascontiguousarray(rec)
        out[f"{p}bias"] = np.ascontiguousarray(bias)
    return out


def _weightless(kind: str) -> bool:
    """A kind that never has weights: its Kind keeps the base weight_shapes (none)."""
    return type(KINDS[kind]).weight_shapes is Kind.weight_shapes


def _inverses() -> dict[str, Inverse]:
    table: dict[str, Inverse] = {kind: _none for kind in KINDS if _weightless(kind)}
    table.update({
        "dense": _by_name, "embedding": _by_name, "batchnorm": _by_name, "layernorm": _by_name,
        "attention": _by_name, "position_embedding": _by_name,
        "conv1d": _conv, "conv2d": _conv, "conv1d_transpose": _conv, "conv2d_transpose": _conv,
        "depthwise_conv1d": _depthwise, "depthwise_conv2d": _depthwise,
        "separable_conv1d": _depthwise, "separable_conv2d": _depthwise,
        "prelu": _prelu, "rnn": _recurrent, "lstm": _recurrent, "gru": _recurrent,
    })
    return table


INVERSES: dict[str, Inverse] = _inverses()
"""Each kind's inverse of its lowering (nnc.onnx.export.lower_<kind>), for the weights: one entry
per kind of nnc.lang.kinds.KINDS (tests/onnx/test_onnx_import.py fails when a kind lacks one,
and checks each against the lowering on every case of the ONNX tests)."""


def weights_from_graph(model: Model, g: CompiledGraph) -> dict[str, np.ndarray]:
    """The checkpoint of a compiled `model` from its graph's initializers, checked against the
    model's shapes and dtypes."""
    weights: dict[str, np.ndarray] = {}
    for layer in model.layers:
        try:
            got = INVERSES[layer.kind](layer, g)
        except (ValueError, IndexError, TypeError) as e:  # arrays of other shapes than nnc writes
            raise UserError(f"layer {layer.name}'s weights in the graph do not have the shapes nnc writes for its "
                            f"{layer.kind} ({str(e)[:160]})", exit_code=1) from None
        for w, shape in layer.weights.items():
            a = got.get(w)
            if a is None or tuple(a.shape) != tuple(shape) or a.dtype != np.float32:
                what = "missing" if a is None else f"{a.dtype}{list(a.shape)}"
                raise UserError(f"layer {layer.name}'s {w} from the graph is {what}, but the spec needs "
                                f"float32{list(shape)}", exit_code=1)
            weights[f"{layer.name}.{w}"] = a
    return weights


def _import_nnc(path: str, m, meta: dict[str, str]) -> Imported:
    from nnc.lang.checker import check_source
    from nnc.onnx.export import SUPPORTED_OPSETS, build

    source = meta[SOURCE_KEY]
    if len(source.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: its spec ({SOURCE_KEY}) is more than {MAX_CONFIG_BYTES:,} bytes; refused",
                        exit_code=1)
    if hashlib.sha256(source.encode("utf-8")).hexdigest() != meta.get(HASH_KEY):
        raise UserError(f"{path}: the spec in its metadata ({SOURCE_KEY}) does not match its {HASH_KEY}: the file "
                        "was altered after nnc compiled it; refused", exit_code=1)
    r = check_source(source, f"{path}:{SOURCE_KEY}")
    if not r.ok:
        raise SpecError(r)
    model = r.model
    try:
        weights = weights_from_graph(model, CompiledGraph(m))
    except UserError as e:
        raise UserError(f"{path}: {e.message}", exit_code=1) from None
    opset = _opset(m)
    notes = []
    if opset in SUPPORTED_OPSETS:
        again = build(model, weights, opset)
        mine = {n: a for n, a in again.initializers}
        theirs = {t.name: t for t in m.graph.initializer}
        bad = [n for n in mine if n not in theirs or _array(theirs[n]).tobytes() != mine[n].tobytes()
               or tuple(theirs[n].dims) != mine[n].shape] + [n for n in theirs if n not in mine]
        if bad:
            raise UserError(f"{path}: its initializers are not what nnc writes for its spec ({_short(bad[:5])}): "
                            "the graph was changed after nnc compiled it, or another nnc version compiled it; "
                            "refused", exit_code=1)
        if [n.SerializeToString() for n in m.graph.node] != list(again.nodes):
            notes.append(f"{path}'s operators differ from the ones this nnc compiles from its spec (an optimizer, "
                         "or another nnc version): the spec and weights are imported as its metadata and "
                         "initializers give them")
    return Imported(source, {}, [], model=model, weights=weights, notes=notes)


# --- other graphs: matching operators into layers -----------------------------------------------


class _Unsupported(Exception):
    """The node (or pattern) at hand matches no nnc layer: the reason."""


_MALFORMED = (IndexError, KeyError, ValueError, TypeError, ZeroDivisionError, AttributeError, OverflowError)
"""What reading a malformed node (a missing input, an attribute of the wrong size) raises."""


def _malformed(e: Exception) -> str:
    return f"a malformed operator ({type(e).__name__}: {str(e)[:120]})"


@dataclass
class _Step:
    kind: str
    opts: dict
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    name: str | None = None
    problem: tuple[str, str, str, str] | None = None  # (node, op, reason, attributes) when unsupported


@dataclass
class _Value:
    """The tensor flowing along the chain: its name, its layout, its nnc (channels-last) shape.
    layout: 'last' [batch, ..., channels]; 'first' [batch, channels, ...]; 'time' [steps, batch, features]."""

    name: str
    layout: str
    shape: tuple[int, ...]
    chw: tuple[int, ...] | None = None  # flattened from this channels-first shape: the order to undo
    flat_at: int | None = None  # with chw: the index of that flatten among the steps
    unit_axes: int = 0  # a global pool kept this many size-1 spatial axes (ONNX keepdims), dropped in nnc


def _f32(v) -> float:
    """An attribute ONNX stores as float32 (1e-05 as 9.999999747378752e-06), as it was typed."""
    return float(str(np.float32(v)))


_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign",
                "Mish": "mish"}
_FUSABLE = {"conv1d", "conv2d", "dense"}
_SELU = (1.6732632423543772, 1.0507009873554805)


class _Matcher:
    def __init__(self, path: str, m):
        self.path = path
        self.graph = m.graph
        self.opset = _opset(m) or 1
        self.consts: dict[str, np.ndarray] = {t.name: _array(t) for t in m.graph.initializer}
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list] = {}
        for n in m.graph.node:
            for o in n.output:
                if o:
                    self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.output) == 1:
                a = _attrs(n)
                if "value" in a and isinstance(a["value"], np.ndarray):
                    self.consts[n.output[0]] = a["value"]
                for k, dt in (("value_int", np.int64), ("value_float", np.float32)):
                    if k in a:
                        self.consts[n.output[0]] = np.array(a[k], dtype=dt)
                for k, dt in (("value_ints", np.int64), ("value_floats", np.float32)):
                    if k in a:
                        self.consts[n.output[0]] = np.array(a[k], dtype=dt)
        self.outputs = [o.name for o in m.graph.output]
        # the nodes the output depends on, not through a Shape (whose input's values do not matter):
        # what only feeds a Shape (a transpose torch cancelled, kept for its shape) is dead
        self.live: set[int] = set()
        todo = [self.producer[o] for o in self.outputs if o in self.producer]
        while todo:
            n = todo.pop()
            if id(n) in self.live:
                continue
            self.live.add(id(n))
            if n.op_type != "Shape":
                todo += [self.producer[i] for i in n.input if i in self.producer]
        self.steps: list[_Step] = []
        self.used: set[str] = set()  # node names (ids) consumed by a pattern

    # helpers

    def const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise _Unsupported(f"its {what} is computed in the graph, not a constant")
        return self.consts[name]

    def data_consumers(self, value: str) -> list:
        """The nodes that read `value` as data: not Shape (whose results only size the zero
        states of recurrent operators), not dead ones, not nodes already matched."""
        return [n for n in self.consumers.get(value, [])
                if n.op_type != "Shape" and id(n) not in self.used and id(n) in self.live]

    def only_consumer(self, value: str):
        cs = self.data_consumers(value)
        return cs[0] if len(cs) == 1 and value not in self.outputs else None

    def emit(self, kind: str, opts: dict, weights: dict | None = None, node=None) -> None:
        self.steps.append(_Step(kind, opts, weights or {}, _module_name(node, kind) if weights else None))

    def unsupported(self, node, reason: str) -> None:
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) and v.size <= 16 else
                     f"<tensor {list(v.shape)}>" if isinstance(v, np.ndarray) else v) for k, v in _attrs(node).items()}
        problem = (node.name or (node.output[0] if node.output else "?"), node.op_type, reason, _short(attrs, 400))
        self.steps.append(_Step("", {}, problem=problem))

    def fuse_activation(self, x: _Value, activation: str) -> bool:
        """Put an activation into the layer that made x (conv/dense with activation linear)."""
        if not self.steps or self.steps[-1].problem is not None:
            return False
        last = self.steps[-1]
        if last.kind in _FUSABLE and last.opts.get("activation", "linear") == "linear" and x.name == self.last_out:
            last.opts["activation"] = activation
            return True
        return False

    # the walk

    def run(self) -> tuple[_Value, list[_Step]]:
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise UserError(f"{self.path}: the graph has {len(inputs)} inputs; nnc models have one", exit_code=1)
        if len(self.outputs) != 1:
            raise UserError(f"{self.path}: the graph has {len(self.outputs)} outputs; nnc models have one", exit_code=1)
        inp = inputs[0]
        tt = inp.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
            raise UserError(f"{self.path}: the input {inp.name!r} has shape {dims}: nnc needs a batch axis and fixed "
                            "sizes for the others", exit_code=1,
                            help="export with a fixed-size example input (only the batch axis dynamic)")
        self.input_dtype = {1: "float32", 7: "int64", 6: "int64"}.get(tt.elem_type)
        if self.input_dtype is None:
            raise UserError(f"{self.path}: the input {inp.name!r} has ONNX element type {tt.elem_type}; nnc takes "
                            "float32 or integer ids", exit_code=1)
        self.input_name = inp.name
        shape = tuple(dims[1:])
        layout = "first" if self.input_dtype == "float32" and len(shape) >= 2 and self._reads_channels_first(inp.name) \
            else "last"
        if layout == "first":
            shape = (*shape[1:], shape[0])
        x = _Value(inp.name, layout, shape)
        self.input_value = x
        self.last_out = None
        guard = 0
        while x.name not in self.outputs:
            guard += 1
            if guard > 100000:  # pragma: no cover - every step consumes a node
                raise UserError(f"{self.path}: the graph does not lead to its output", exit_code=1)
            cs = self.data_consumers(x.name)
            if not cs:
                raise UserError(f"{self.path}: the value {x.name!r} leads nowhere; nnc follows one chain from the "
                                "input to the output", exit_code=1)
            if len(cs) > 1:
                try:
                    y = self._branch(x, cs)
                except _MALFORMED:
                    y = None
                if y is None:
                    for n in cs:
                        self.unsupported(n, "the graph branches here (a residual or parallel path); nnc's import "
                                            "follows one chain of operators")
                    break
                x = y
                continue
            node = cs[0]
            self.used.add(id(node))
            before = len(self.steps)
            try:
                y = self.match(node, x)
            except (_Unsupported, *_MALFORMED) as e:
                self.unsupported(node, str(e) if isinstance(e, _Unsupported) else _malformed(e))
                out = node.output[0] if node.output else None
                if out is None:
                    break
                y = _Value(out, x.layout, x.shape, x.chw, x.flat_at, x.unit_axes)
            if len(self.steps) > before and self.steps[-1].problem is None:
                self.last_out = y.name
            elif len(self.steps) == before and self.last_out == x.name:
                self.last_out = y.name  # the same layer's output, moved (a transpose, an identity)
            x = y
        return x, self.steps

    def _reads_channels_first(self, name: str) -> bool:
        """Whether the first operator that cares about the layout reads the input channels-first."""
        seen = 0
        while seen < 64:
            seen += 1
            cs = self.data_consumers(name)
            if len(cs) != 1:
                return False
            n = cs[0]
            if n.op_type in ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                             "BatchNormalization", "ConvTranspose"):
                return True
            if n.op_type not in _ACTIVATIONS and n.op_type not in ("Identity", "Dropout", "LeakyRelu", "Elu", "Pad") \
                    or not n.output:
                return False
            name = n.output[0]
        return False

    def _branch(self, x: _Value, cs: list):
        """Two readers of one value that make one layer: x * sigmoid(x) (silu)."""
        ops = sorted(n.op_type for n in cs)
        if ops == ["Mul", "Sigmoid"]:
            sig = next(n for n in cs if n.op_type == "Sigmoid")
            mul = next(n for n in cs if n.op_type == "Mul")
            if sorted(mul.input) == sorted([x.name, sig.output[0]]):
                self.used.update({id(sig), id(mul)})
                y = _Value(mul.output[0], x.layout, x.shape, x.chw, x.flat_at, x.unit_axes)
                if not self.fuse_activation(x, "silu"):
                    self.emit("silu", {})
                self.last_out = y.name
                return y
        return None

    def same(self, node, x: _Value, **changes) -> _Value:
        return _Value(node.output[0], changes.get("layout", x.layout), changes.get("shape", x.shape),
                      changes.get("chw", x.chw), x.flat_at, changes.get("unit_axes", x.unit_axes))

    def match(self, node, x: _Value) -> _Value:
        if node.domain not in ("", "ai.onnx"):
            raise _Unsupported(f"an operator of the domain {node.domain!r}")
        op, a = node.op_type, _attrs(node)
        fn = getattr(self, f"op_{op}", None)
        if fn is None:
            raise _Unsupported("no nnc layer computes this operator")
        if list(node.input).index(x.name) != 0 and op not in ("Gather", "Add", "Mul", "MatMul"):
            raise _Unsupported("the chain's value is not its first input")
        return fn(node, x, a)

    # elementwise ---------------------------------------------------------------------------

    def op_Identity(self, node, x, a):
        return self.same(node, x)

    def op_Dropout(self, node, x, a):
        if len(node.output) > 1 and node.output[1] and self.consumers.get(node.output[1]):
            raise _Unsupported("its mask output is read")
        rate = a.get("ratio", 0.5)
        if len(node.input) > 1 and node.input[1]:
            rate = float(self.const(node.input[1], "ratio"))
        if len(node.input) > 2 and node.input[2] and bool(self.const(node.input[2], "training_mode")):
            raise _Unsupported("training_mode is true: it drops values in inference")
        if 0 < rate < 1:
            self.emit("dropout", {"rate": _f32(rate)})
        return self.same(node, x)

    def _activation(self, node, x, name: str, **opts):
        if opts or not self.fuse_activation(x, name):
            self.emit(name, opts)
        return self.same(node, x)

    def op_Relu(self, node, x, a):
        return self._activation(node, x, "relu")

    def op_Sigmoid(self, node, x, a):
        return self._activation(node, x, "sigmoid")

    def op_Tanh(self, node, x, a):
        return self._activation(node, x, "tanh")

    def op_Softplus(self, node, x, a):
        return self._activation(node, x, "softplus")

    def op_Softsign(self, node, x, a):
        return self._activation(node, x, "softsign")

    def op_Mish(self, node, x, a):
        return self._activation(node, x, "mish")

    def op_LeakyRelu(self, node, x, a):
        return self._activation(node, x, "leaky_relu", negative_slope=_f32(a.get("alpha", 0.01)))

    def op_Elu(self, node, x, a):
        alpha = _f32(a.get("alpha", 1.0))
        return self._activation(node, x, "elu", **({} if alpha == 1.0 else {"alpha": alpha}))

    def op_Selu(self, node, x, a):
        if abs(a.get("alpha", 1.67326319) - _SELU[0]) > 1e-6 or abs(a.get("gamma", 1.05070102) - _SELU[1]) > 1e-6:
            raise _Unsupported("alpha and gamma are not selu's")
        return self._activation(node, x, "selu")

    def op_HardSigmoid(self, node, x, a):
        if abs(a.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(a.get("beta", 0.5) - 0.5) > 1e-6:
            raise _Unsupported("alpha and beta are not Keras's hard_sigmoid's (1/6, 1/2)")
        return self._activation(node, x, "hard_sigmoid")

    def op_Gelu(self, node, x, a):
        return self._activation(node, x, "gelu_tanh" if a.get("approximate", "none") == "tanh" else "gelu")

    def op_Clip(self, node, x, a):
        lo = a.get("min")
        hi = a.get("max")
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const(node.input[1], "min"))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const(node.input[2], "max"))
        if (lo, hi) != (0.0, 6.0):
            raise _Unsupported(f"a clip to [{lo}, {hi}]; nnc has relu6, [0, 6]")
        return self._activation(node, x, "relu6")

    def _softmax(self, node, x, a, name):
        rank = len(x.shape) + 1
        axis = a.get("axis", -1 if self.opset >= 13 else 1) % rank
        channels = 1 if x.layout == "first" else rank - 1
        if x.layout == "time" or axis != channels:
            raise _Unsupported(f"a {name} over axis {a.get('axis', -1)}, not the channels")
        if self.opset < 13 and axis != rank - 1:  # before opset 13: over all the axes from `axis` on
            raise _Unsupported(f"a {name} of opset {self.opset} over the axes from 1 on, not the channels alone")
        return self._activation(node, x, name)

    def op_Softmax(self, node, x, a):
        return self._softmax(node, x, a, "softmax")

    def op_LogSoftmax(self, node, x, a):
        return self._softmax(node, x, a, "log_softmax")

    # convolutions and pools ---------------------------------------------------------------

    def _window(self, node, x, a, kernel, what):
        """(stride, dilation, padding, explicit pads) of a Conv/pool on a channels-first x."""
        if x.layout != "first":
            raise _Unsupported(f"a {what} of a channels-last tensor")
        n = len(x.shape) - 1
        if n not in (1, 2):
            raise _Unsupported(f"a {n}-D {what}; nnc has 1-D and 2-D ones")
        strides = tuple(a.get("strides", [1] * n))
        dil = tuple(a.get("dilations", [1] * n))
        auto = a.get("auto_pad", "NOTSET")
        sizes = x.shape[:-1]
        same = []
        for size, k, s, d in zip(sizes, kernel, strides, dil):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            same.append((total // 2, total - total // 2))
        if auto in ("SAME_UPPER",):
            pads = same
        elif auto == "VALID":
            pads = [(0, 0)] * n
        elif auto == "NOTSET":
            p = list(a.get("pads", [0] * 2 * n))
            pads = list(zip(p[:n], p[n:]))
        else:
            raise _Unsupported(f"auto_pad={auto}: Keras's same puts the odd pixel at the end (SAME_UPPER)")
        out = []
        for size, k, s, d, (b, e) in zip(sizes, kernel, strides, dil, pads):
            span = (k - 1) * d + 1
            out.append((size + b + e - span) // s + 1)
        if all(p == (0, 0) for p in pads):
            padding = "valid"
        elif pads == same:
            padding = "same"
        else:
            padding = None
        return strides, dil, padding, pads, out

    def op_Conv(self, node, x, a):
        w = self.const(node.input[1], "kernel").astype(np.float32)
        n = w.ndim - 2
        kernel = tuple(a.get("kernel_shape", w.shape[2:]))
        group = int(a.get("group", 1))
        strides, dil, padding, pads, out = self._window(node, x, a, kernel, "convolution")
        if w.shape[1] * group != x.shape[-1]:
            raise _Unsupported(f"its kernel reads {w.shape[1] * group} channels, the tensor has {x.shape[-1]}")
        if padding is None:  # explicit padding Keras's same does not give: a zero padding layer first
            self.emit(f"zeropad{n}d", {"padding": tuple(pads)})
            x = _Value(x.name, x.layout, (*[s + b + e for s, (b, e) in zip(x.shape[:-1], pads)], x.shape[-1]))
            padding = "valid"
        opts: dict = {"filters": int(w.shape[0]), "kernel": kernel, "stride": strides, "padding": padding,
                      "dilation": dil, "groups": group}
        weights = {"kernel": _kernel_back(w)}
        if len(node.input) > 2 and node.input[2]:
            weights["bias"] = self.const(node.input[2], "bias").astype(np.float32)
        else:
            opts["use_bias"] = False
        self.emit(f"conv{n}d", opts, weights, node)
        return self.same(node, x, shape=(*out, int(w.shape[0])))

    def _pool(self, node, x, a, kind):
        kernel = tuple(a["kernel_shape"])
        n = len(kernel)
        strides, dil, padding, pads, out = self._window(node, x, a, kernel, "pool")
        if any(d != 1 for d in dil):
            raise _Unsupported("a dilated pool")
        if a.get("ceil_mode", 0):
            floor_out = out
            ceil_out = [-(-(s + b + e - k) // st) + 1 for s, k, st, (b, e) in zip(x.shape[:-1], kernel, strides, pads)]
            if ceil_out != floor_out:
                raise _Unsupported("ceil_mode=1 adds a partial window; Keras's pools have none")
        if padding is None:
            raise _Unsupported("explicit padding other than Keras's same")
        if kind == "avg" and padding == "same" and a.get("count_include_pad", 0):
            raise _Unsupported("count_include_pad=1: Keras averages over the pixels inside the input only")
        opts = {"pool": kernel, "stride": strides, "padding": padding}
        if strides == kernel:
            del opts["stride"]
        self.emit(f"{kind}pool{n}d", opts)
        return self.same(node, x, shape=(*out, x.shape[-1]))

    def op_MaxPool(self, node, x, a):
        if len(node.output) > 1 and node.output[1]:
            raise _Unsupported("its indices output is read")
        return self._pool(node, x, a, "max")

    def op_AveragePool(self, node, x, a):
        return self._pool(node, x, a, "avg")

    def _global(self, node, x, kind, keep):
        if x.layout == "time":
            raise _Unsupported("a global pool of a time-major tensor")
        self.emit(f"global{kind}pool", {})
        n = len(x.shape) - 1
        return self.same(node, x, layout="last", shape=(x.shape[-1],), unit_axes=n if keep else 0)

    def op_GlobalAveragePool(self, node, x, a):
        if x.layout != "first":
            raise _Unsupported("a global pool of a channels-last tensor")
        return self._global(node, x, "avg", True)

    def op_GlobalMaxPool(self, node, x, a):
        if x.layout != "first":
            raise _Unsupported("a global pool of a channels-last tensor")
        return self._global(node, x, "max", True)

    def _reduce(self, node, x, a, kind):
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1], "axes").tolist()
        rank = len(x.shape) + 1
        axes = sorted(int(i) % rank for i in (axes or []))
        spatial = list(range(2, rank)) if x.layout == "first" else list(range(1, rank - 1))
        if axes != spatial or x.layout == "time" or not spatial:
            raise _Unsupported(f"a reduction over axes {axes}; nnc's global pools reduce the spatial axes")
        return self._global(node, x, kind, bool(a.get("keepdims", 1)))

    def op_ReduceMean(self, node, x, a):
        return self._reduce(node, x, a, "avg")

    def op_ReduceMax(self, node, x, a):
        return self._reduce(node, x, a, "max")

    def op_BatchNormalization(self, node, x, a):
        if x.chw is not None:
            raise _Unsupported("a batch normalization of a flatten of a channels-first tensor")
        if x.layout == "time" or (x.layout == "last" and len(x.shape) > 1):
            raise _Unsupported("a batch normalization over axis 1 that is not the channels")
        if len(node.output) > 1 and any(node.output[1:]):
            raise _Unsupported("training mode (it outputs running statistics)")
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        weights = {k: self.const(i, k).astype(np.float32) for k, i in zip(names, node.input[1:5])}
        opts = {"epsilon": _f32(a.get("epsilon", 1e-5)), "momentum": _f32(a.get("momentum", 0.9))}
        self.emit("batchnorm", opts, weights, node)
        return self.same(node, x)

    def op_LayerNormalization(self, node, x, a):
        if x.chw is not None:
            raise _Unsupported("a layer normalization of a flatten of a channels-first tensor")
        if x.layout != "last" or a.get("axis", -1) not in (-1, len(x.shape)):
            raise _Unsupported("a layer normalization over more than the last axis")
        weights = {"gamma": self.const(node.input[1], "scale").astype(np.float32)}
        opts: dict = {"epsilon": _f32(a.get("epsilon", 1e-5))}
        if len(node.input) > 2 and node.input[2]:
            weights["beta"] = self.const(node.input[2], "bias").astype(np.float32)
        else:
            opts["center"] = False
        self.emit("layernorm", opts, weights, node)
        return self.same(node, x)

    # reshaping ---------------------------------------------------------------------------

    def _flatten(self, node, x):
        if x.unit_axes:  # the size-1 axes a global pool kept: nnc's pool dropped them already
            return self.same(node, x, unit_axes=0)
        if x.layout == "time":
            raise _Unsupported("a flatten of a time-major tensor")
        if len(x.shape) == 1:
            return self.same(node, x)
        chw = None
        if x.layout == "first":
            c, spatial = x.shape[-1], x.shape[:-1]
            if c > 1 and int(np.prod(spatial)) > 1:
                chw = (c, *spatial)
        self.emit("flatten", {})
        y = self.same(node, x, layout="last", shape=(int(np.prod(x.shape)),), chw=chw)
        y.flat_at = len(self.steps) - 1
        return y

    def op_Flatten(self, node, x, a):
        if a.get("axis", 1) != 1:
            raise _Unsupported("a flatten that keeps more than the batch axis")
        return self._flatten(node, x)

    def op_Reshape(self, node, x, a):
        shape = self._target_shape(node)
        total = int(np.prod(x.shape))
        if shape is not None and len(shape) == 2 and shape[1] in (total, -1) and shape[0] in (0, -1) or \
                shape is not None and len(shape) == 2 and shape[0] not in (0, -1) and shape[1] == total:
            return self._flatten(node, x)
        if shape is not None and x.layout == "last" and not x.unit_axes and shape[0] in (0, -1) and len(shape) >= 2:
            dims = list(shape[1:])
            self.emit("reshape", {"shape": tuple(dims)})
            known = int(np.prod([d for d in dims if d != -1]))
            dims = [total // known if d == -1 else d for d in dims]
            return self.same(node, x, shape=tuple(dims))
        raise _Unsupported("a reshape other than a flatten, of a channels-last tensor or to a known shape")

    def _target_shape(self, node) -> list[int] | None:
        """A Reshape's target: a constant, or torch's Concat(batch, constants...) of x.size(0), -1."""
        name = node.input[1]
        if name in self.consts:
            return [int(v) for v in self.consts[name].reshape(-1)]
        p = self.producer.get(name)
        if p is not None and p.op_type == "Concat":
            out = []
            for i, part in enumerate(p.input):
                if part in self.consts:
                    out += [int(v) for v in self.consts[part].reshape(-1)]
                elif i == 0:
                    out.append(0)  # the batch, taken from Shape: kept
                else:
                    return None
            return out
        return None

    def op_Squeeze(self, node, x, a):
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1], "axes").tolist()
        if x.unit_axes and axes is not None and sorted(int(i) for i in axes) == list(range(2, 2 + x.unit_axes)):
            return self.same(node, x, unit_axes=0)
        raise _Unsupported("a squeeze outside the patterns nnc knows")

    def op_Transpose(self, node, x, a):
        perm = list(a.get("perm", []))
        rank = len(x.shape) + 1
        if x.layout == "last" and rank == 3 and perm == [1, 0, 2]:
            return self.same(node, x, layout="time")
        if x.layout == "time" and perm == [1, 0, 2]:
            return self.same(node, x, layout="last")
        if x.layout == "last" and not x.unit_axes and perm == [0, rank - 1, *range(1, rank - 1)] and rank in (3, 4):
            return self.same(node, x, layout="first")
        if x.layout == "first" and perm == [0, *range(2, rank), 1]:
            return self.same(node, x, layout="last")
        raise _Unsupported(f"a transpose {perm} that is not a change between channels-first, channels-last and "
                           "time-major")

    # dense -------------------------------------------------------------------------------

    def _dense(self, node, x, kernel: np.ndarray, bias: np.ndarray | None, out_node) -> _Value:
        if x.layout != "last" or x.unit_axes:
            raise _Unsupported("a matrix product that is not on the last axis of a channels-last tensor")
        if kernel.ndim != 2 or kernel.shape[0] != x.shape[-1]:
            raise _Unsupported(f"a weight of shape {list(kernel.shape)} for {x.shape[-1]} features")
        kernel = kernel.astype(np.float32)
        if x.chw is not None:  # rows in Flatten's channels-first order (C, H, W) -> nnc's (H, W, C)
            c, *spatial = x.chw
            n = len(spatial)
            kernel = kernel.reshape(c, *spatial, -1).transpose(*range(1, n + 1), 0, n + 1).reshape(x.shape[-1], -1)
        units = int(kernel.shape[1])
        weights = {"kernel": np.ascontiguousarray(kernel)}
        opts: dict = {"units": units}
        if bias is not None:
            b = bias.astype(np.float32).reshape(-1)
            if b.shape[0] != units:
                b = np.broadcast_to(b, (units,)).copy()
            weights["bias"] = b
        else:
            opts["use_bias"] = False
        self.emit("dense", opts, weights, node)
        return _Value(out_node.output[0], "last", (*x.shape[:-1], units))

    def op_Gemm(self, node, x, a):
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or (a.get("beta", 1.0) != 1.0 and len(node.input) > 2):
            raise _Unsupported("transA, alpha or beta other than a plain x W + b")
        if len(x.shape) != 1:
            raise _Unsupported("a Gemm of a tensor that is not a batch of vectors")
        w = self.const(node.input[1], "weight")
        w = w.T if a.get("transB", 0) else w
        b = self.const(node.input[2], "bias") if len(node.input) > 2 and node.input[2] else None
        return self._dense(node, x, w, b, node)

    def op_MatMul(self, node, x, a):
        if node.input[0] != x.name:
            raise _Unsupported("the chain's value is the right operand")
        w = self.const(node.input[1], "weight")
        add = self.only_consumer(node.output[0])
        b = None
        if add is not None and add.op_type == "Add":
            other = [i for i in add.input if i != node.output[0]]
            if len(other) == 1 and other[0] in self.consts and self.consts[other[0]].size == w.shape[-1]:
                b = self.consts[other[0]]
                self.used.add(id(add))
                return self._dense(node, x, w, b, add)
        return self._dense(node, x, w, None, node)

    def op_Add(self, node, x, a):
        raise _Unsupported("an addition that follows no matrix product (a bias nnc cannot place)")

    def op_Mul(self, node, x, a):
        raise _Unsupported("a product with a tensor")

    def op_Gather(self, node, x, a):
        if node.input[1] == x.name and node.input[0] in self.consts and a.get("axis", 0) == 0:
            if x.name != self.input_name or self.input_dtype != "int64" or self.steps:
                raise _Unsupported("a table lookup that does not read the model's integer input")
            table = self.consts[node.input[0]].astype(np.float32)
            if table.ndim != 2:
                raise _Unsupported("a lookup table that is not a matrix")
            self.vocab = int(table.shape[0])
            self.emit("embedding", {"dim": int(table.shape[1])}, {"embeddings": table}, node)
            return self.same(node, x, shape=(*x.shape, int(table.shape[1])))
        if node.input[0] == x.name and node.input[1] in self.consts:
            return self._last_step(node, x, a)
        raise _Unsupported("a gather that is neither an embedding lookup nor the last step of a sequence")

    def _last_step(self, node, x, a):
        """x[:, -1] (or x[-1] time-major) of a recurrent layer's sequence: its last state."""
        idx = self.consts[node.input[1]]
        axis = a.get("axis", 0)
        time_axis = 0 if x.layout == "time" else 1
        steps = x.shape[0]
        last = self.steps[-1] if self.steps else None
        if idx.ndim == 0 and int(idx) in (-1, steps - 1) and axis == time_axis and last is not None \
                and last.kind in ("lstm", "gru", "rnn") and last.opts.get("return_sequences") \
                and not last.opts.get("bidirectional") \
                and self.last_out == x.name and len(x.shape) == 2:
            last.opts["return_sequences"] = False
            return self.same(node, x, layout="last", shape=(x.shape[-1],))
        raise _Unsupported("a gather other than the last step of a recurrent layer's sequence")

    # recurrent ---------------------------------------------------------------------------

    def _zero(self, name: str, depth: int = 0) -> bool:
        if not name:
            return True
        if name in self.consts:
            return not np.any(self.consts[name])
        p = self.producer.get(name)
        if p is not None and p.op_type == "ConstantOfShape":
            v = _attrs(p).get("value")
            return v is None or not np.any(v)
        if p is not None and p.op_type in ("Expand", "Tile", "Unsqueeze", "Reshape", "Identity", "Slice", "Squeeze"):
            return depth < 16 and self._zero(p.input[0], depth + 1)
        return False

    def _rnn(self, node, x, a, kind: str, gates: int):
        if a.get("layout", 0) != 0:
            raise _Unsupported("layout=1 (batch-major); the import reads the operators' time-major layout 0")
        if x.layout != "time" or len(x.shape) != 2:
            raise _Unsupported("its input is not a time-major sequence")
        direction = a.get("direction", "forward")
        if direction not in ("forward", "bidirectional"):
            raise _Unsupported(f"direction={direction}: Keras's go_backwards returns the states in another order")
        dirs = 2 if direction == "bidirectional" else 1
        if a.get("clip") is not None or a.get("input_forget", 0):
            raise _Unsupported("clip or input_forget")
        ins = list(node.input) + [""] * 8
        if ins[4]:
            raise _Unsupported("sequence_lens (steps of different lengths)")
        for i in (5, 6) if kind == "lstm" else (5,):
            if not self._zero(ins[i]):
                raise _Unsupported("an initial state that is not zero")
        if kind == "lstm" and ins[7]:
            raise _Unsupported("peepholes")
        u = int(a["hidden_size"])
        W = self.const(ins[1], "W").astype(np.float32)
        R = self.const(ins[2], "R").astype(np.float32)
        B = self.const(ins[3], "B").astype(np.float32) if ins[3] else np.zeros((dirs, 2 * gates * u), np.float32)
        if W.shape != (dirs, gates * u, x.shape[-1]) or R.shape != (dirs, gates * u, u) or \
                B.shape != (dirs, 2 * gates * u):
            raise _Unsupported(f"W, R, B of shapes {list(W.shape)}, {list(R.shape)}, {list(B.shape)} for "
                               f"{x.shape[-1]} features and {u} units")
        opts: dict = {"units": u}
        acts = [s.lower() for s in a.get("activations", [])]
        defaults = {"lstm": ["sigmoid", "tanh", "tanh"], "gru": ["sigmoid", "tanh"], "rnn": ["tanh"]}[kind]
        if acts and acts != defaults * dirs:
            per = len(defaults)
            if a.get("activation_alpha") or a.get("activation_beta") or acts != acts[:per] * dirs or \
                    any(s not in ("tanh", "sigmoid", "relu") for s in acts) or (kind == "lstm" and acts[1] != acts[2]):
                raise _Unsupported(f"activations {acts}")
            if kind == "rnn":
                opts["activation"] = acts[0]
            else:
                opts["recurrent_activation"], opts["activation"] = acts[0], acts[1]
        if kind == "gru" and not a.get("linear_before_reset", 0):
            opts["reset_after"] = False
        weights: dict[str, np.ndarray] = {}
        for d, prefix in enumerate(["forward.", "backward."] if dirs == 2 else [""]):
            kernel, rec = W[d].T, R[d].T
            wb, rb = B[d, :gates * u], B[d, gates * u:]
            if kind == "lstm":  # ONNX gates i, o, f, c -> Keras's i, f, c, o; one bias: Wb + Rb
                kernel, rec = _gates_back(kernel, _LSTM_BACK, u), _gates_back(rec, _LSTM_BACK, u)
                bias = _gates_back(wb + rb, _LSTM_BACK, u)
            elif kind == "gru" and opts.get("reset_after", True):
                bias = np.stack([wb, rb])  # r * (h R + Rb): Keras's reset_after, bias [Wb, Rb]; gates z, r, h both
            else:  # one bias (rnn; gru without reset_after, whose Rb sits outside the reset product)
                bias = wb + rb
            weights[f"{prefix}kernel"] = np.ascontiguousarray(kernel)
            weights[f"{prefix}recurrent_kernel"] = np.ascontiguousarray(rec)
            weights[f"{prefix}bias"] = np.ascontiguousarray(bias, dtype=np.float32)
        if dirs == 2:
            opts["bidirectional"] = True
        steps = x.shape[0]
        outs = list(node.output) + ["", "", ""]
        read = [i for i in range(3) if outs[i] and (self.data_consumers(outs[i]) or outs[i] in self.outputs)]
        if read == [0]:  # Y [steps, dirs, batch, units]: the sequence
            y = self._sequence(outs[0], dirs, u, steps)
            opts["return_sequences"] = True
            self.emit(kind, opts, weights, node)
            return _Value(y, "time", (steps, dirs * u))
        if read == [1]:  # Y_h [dirs, batch, units]: the last states
            y = self._last_states(outs[1], dirs)
            self.emit(kind, opts, weights, node)
            return _Value(y, "last", (dirs * u,))
        raise _Unsupported("it gives both its sequence and its states (or none); an nnc layer gives one")

    def _index(self, node, axis: int) -> int | None:
        """The constant scalar index of a Gather on `axis`, or None."""
        if node.op_type != "Gather" or _attrs(node).get("axis", 0) != axis or node.input[1] not in self.consts:
            return None
        i = self.consts[node.input[1]]
        return int(i) if i.ndim == 0 else None

    def _sequence(self, y: str, dirs: int, u: int, steps: int) -> str:
        """The nodes that make Y [steps, dirs, batch, units] the [steps, batch, dirs * units] sequence
        (Keras's: a bidirectional layer's directions concatenated); their output."""
        n = self.only_consumer(y)
        if dirs == 1 and n is not None and n.op_type == "Squeeze" and self._axes(n) == [1]:
            self.used.add(id(n))
            return n.output[0]
        if dirs == 2 and n is not None and n.op_type == "Transpose" and _attrs(n).get("perm") == [0, 2, 1, 3]:
            r = self.only_consumer(n.output[0])
            shape = self._target_shape(r) if r is not None and r.op_type == "Reshape" else None
            if shape is not None and len(shape) == 3 and shape.count(-1) <= 1 and shape[2] in (-1, 2 * u) \
                    and shape[1] in (0, -1) and shape[0] in (0, -1, steps):
                self.used.update({id(n), id(r)})
                return r.output[0]
        raise _Unsupported("its sequence Y is read other than as one sequence of its directions")

    def _last_states(self, yh: str, dirs: int) -> str:
        """The nodes that take Y_h [dirs, batch, units] to [batch, dirs * units] (forward, backward);
        their output."""
        cs = self.data_consumers(yh)
        if dirs == 1 and len(cs) == 1 and (cs[0].op_type == "Squeeze" and self._axes(cs[0]) == [0]
                                           or self._index(cs[0], 0) in (0, -1)):
            self.used.add(id(cs[0]))
            return cs[0].output[0]
        if dirs == 2 and len(cs) == 2 and all(self._index(c, 0) is not None for c in cs):
            order = sorted(cs, key=lambda c: self._index(c, 0) % 2)
            cat = [self.only_consumer(c.output[0]) for c in order]
            if [self._index(c, 0) % 2 for c in order] == [0, 1] and cat[0] is not None and cat[0] is cat[1] \
                    and cat[0].op_type == "Concat" and _attrs(cat[0]).get("axis") in (1, -1) \
                    and list(cat[0].input) == [c.output[0] for c in order]:
                self.used.update({id(order[0]), id(order[1]), id(cat[0])})
                return cat[0].output[0]
        raise _Unsupported("its last states Y_h are read other than as the forward then the backward state")

    def _axes(self, node) -> list[int] | None:
        axes = _attrs(node).get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in self.consts:
            axes = self.consts[node.input[1]].reshape(-1).tolist()
        return None if axes is None else [int(i) for i in axes]

    def op_LSTM(self, node, x, a):
        return self._rnn(node, x, a, "lstm", 4)

    def op_GRU(self, node, x, a):
        return self._rnn(node, x, a, "gru", 3)

    def op_RNN(self, node, x, a):
        return self._rnn(node, x, a, "rnn", 1)


def _module_name(node, kind: str) -> str | None:
    """The layer's name from the exporter's: PyTorch names a module's node `/fc1/Gemm` and its
    weights `fc1.weight`; nnc takes `fc1` (a nested `features.0` becomes `features_0`)."""
    if node is None:
        return None
    for i in node.input:
        if i.endswith(".weight"):
            base = i.rsplit(".", 1)[0]
            break
    else:
        parts = [p for p in node.name.split("/") if p]
        base = ".".join(parts[:-1]) if len(parts) > 1 else ""
    name = re.sub(r"\W", "_", base).strip("_")
    if not name or not _NAME_RE.match(name) or name in _RESERVED or name in KINDS:
        return None
    return name


def _spec_text(path: str, m, match: _Matcher, steps: list[_Step], named: bool) -> str:
    x = match.input_value
    shape = ", ".join(map(str, x.shape))
    inp = re.sub(r"\W", "_", match.input_name) or "x"
    if not _NAME_RE.match(inp) or inp in _RESERVED:
        inp = "x"
    if match.input_dtype == "int64":
        vocab = getattr(match, "vocab", None)
        line = f"input {inp}: int64[{shape}]" + (f" vocab={vocab}" if vocab else "")
    else:
        line = f"input {inp}: float32[{shape}]"
    model_name = _spec_name(os.path.splitext(os.path.basename(path))[0])  # not the graph's name (torch: main_graph)
    lines = [f"# imported from {os.path.basename(path)} by nnc import"
             + (f" ({m.producer_name} {m.producer_version})".rstrip() if m.producer_name else ""),
             f"model {model_name}", "", line, ""]
    if x.layout == "first":
        lines.insert(1, "# the graph's input is channels-first; the spec's is channels-last: transpose inputs "
                        f"[batch, {x.shape[-1]}, {', '.join(map(str, x.shape[:-1]))}] -> [batch, {shape}]")
    seen: set[str] = set()
    for s in steps:
        if s.problem is not None:
            name, op, reason, _ = s.problem
            lines.append(f"# unsupported: {name} ({op}): {reason}")
            continue
        label = s.name if named and s.name and s.name not in seen else None
        if label:
            seen.add(label)
        opts = dict(s.opts)
        if s.kind == "embedding":
            opts.pop("vocab", None)
        lines.append(f"{label + ': ' if label else ''}{layer_text(s.kind, opts)}")
    return "\n".join(lines) + "\n"


def _import_graph(path: str, m) -> Imported:
    from nnc.lang.checker import check_source
    from nnc.lang.fmt import format_source

    match = _Matcher(path, m)
    try:
        x, steps = match.run()
    except _Unsupported as e:  # pragma: no cover - run() reports them as steps
        raise UserError(f"{path}: {e}", exit_code=1) from None
    problems = [s.problem for s in steps if s.problem is not None]
    if not problems and x.layout == "time":
        problems.append((x.name, "(output)", "the output is a time-major sequence", ""))
        steps.append(_Step("", {}, problem=problems[-1]))
    if not problems and x.chw is not None:
        # the output is a flatten of a channels-first tensor that no dense reordered: its order is
        # the graph's (C, H, W) when the channels move first before nnc's flatten
        n = len(x.chw) - 1
        steps.insert(x.flat_at, _Step("permute", {"axes": (n + 1, *range(1, n + 1))}))
    text = _spec_text(path, m, match, steps, named=True)
    if problems:
        return Imported(text, {}, problems)
    r = check_source(text, path + ".nnspec")
    if not r.ok and any(d.code == "duplicate-name" for d in r.errors):
        text = _spec_text(path, m, match, steps, named=False)
        r = check_source(text, path + ".nnspec")
    if not r.ok:
        raise SpecError(r)
    model = r.model
    weights: dict[str, np.ndarray] = {}
    for layer, s in zip(model.layers, steps):
        if layer.kind != s.kind:  # pragma: no cover - the spec is the steps, in order
            raise UserError(f"{path}: internal mismatch: layer {layer.name} is {layer.kind}, not {s.kind}", exit_code=3)
        for w, shape in layer.weights.items():
            a = s.weights.get(w)
            if a is None or tuple(a.shape) != tuple(shape):
                raise UserError(f"{path}: layer {layer.name}'s {w} is {None if a is None else list(a.shape)} in the "
                                f"graph; the spec's {layer.kind} needs {list(shape)}", exit_code=1)
            weights[f"{layer.name}.{w}"] = np.ascontiguousarray(a, dtype=np.float32)
    text = text.rstrip("\n") + (f"\n\nexpect params == {model.total_params}\n"
                                f"expect output == [{', '.join(map(str, model.output_shape))}]\n")
    formatted, errors = format_source(text, path + ".nnspec")
    if formatted is None:  # pragma: no cover - the text checked
        raise UserError(f"{path}: the imported spec does not format: {errors[0].message}", exit_code=3)
    r = check_source(formatted, path + ".nnspec")
    if not r.ok:
        raise SpecError(r)
    return Imported(formatted, {}, [], model=r.model, weights=weights)
