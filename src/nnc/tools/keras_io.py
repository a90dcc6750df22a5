"""Keras 3 files without Keras: `nnc import` reads `.keras` archives and legacy `.h5` files into
specs and checkpoints, `nnc export keras` writes a spec (and its weights) as a `.keras` archive
that `keras.saving.load_model` opens with Keras's own layer classes.

Neither direction imports Keras or TensorFlow: configs are JSON (read with `json`, never
evaluated: a `Lambda`'s Python bytecode is only ever reported as an unsupported layer), weights
are HDF5 (h5py).

The two layouts of weights (Keras 3.x):

- `.keras`: a zip of `config.json` (the model's serialized config: `module`, `class_name`,
  `config`, `registered_name`, `build_config` per layer), `metadata.json` and
  `model.weights.h5`, where a layer's variables are `layers/<slot>/vars/0, 1, ...` (`<slot>`
  is the layer's class in snake case, numbered in the order of `model.layers`: `conv2d`,
  `conv2d_1`, ...; the `vars` group's `name` attribute is the layer's name), a recurrent
  layer's under `layers/<slot>/cell/vars`, a Bidirectional's under `forward_layer/cell` and
  `backward_layer/cell`, a MultiHeadAttention's under `query_dense`, `key_dense`,
  `value_dense`, `output_dense`.
- legacy `.h5`: the config in the `model_config` attribute, the weights in
  `model_weights/<layer>/`, listed in order by the group's `weight_names` attribute.

Layer names. nnc numbers unnamed layers from 1 per kind (`conv2d_1`, `conv2d_2`); Keras names
them after their class from 0 (`conv2d`, `conv2d_1`). Exports keep nnc's names as the Keras
layers' names (Keras accepts any unique name) and imports keep Keras's names as the spec's
layer names, so checkpoints carry over one to one. `keras_auto_names` gives, instead, the names
Keras itself would give the spec's layers in a fresh session: `--keras-names` reads and writes
checkpoints keyed by those (`conv2d.kernel`, `conv2d_1.kernel`, ...).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any

from nnc.lang.errors import UserError
from nnc.lang.kinds import ACTIVATIONS, KINDS
from nnc.lang.model import Block, Layer, Model, Node
from nnc.lang.weights import refuse_past_memory

MAX_CONFIG_BYTES = 64 << 20
"""config.json / metadata.json / model_config larger than this are refused unread."""

# --- names ------------------------------------------------------------------------------------


def to_snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case: `Conv2D` -> `conv2d`, `MaxPooling2D` -> `max_pooling2d`."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique(prefix: str, used: dict[str, int]) -> str:
    """Keras's numbering of a prefix: the first is `prefix`, then `prefix_1`, `prefix_2`, ..."""
    n = used.get(prefix, 0)
    used[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


MERGE_CLASSES = {"add": "Add", "concat": "Concatenate", "multiply": "Multiply", "average": "Average",
                 "maximum": "Maximum", "minimum": "Minimum", "subtract": "Subtract"}


def keras_auto_names(model: Model) -> dict[str, str]:
    """nnc layer name -> the name Keras gives the same layer when the model is built in a fresh
    session without names: each layer class's snake-case name, numbered from 0 in creation order
    (the spec's reading order). A bidirectional layer takes its wrapped class's name too (Keras
    creates the inner layer first), an attention layer a `softmax` and a `dropout` (its
    MultiHeadAttention makes them when built). The one place nnc maps names to Keras's.
    """
    return _auto_names(model)[0]


def _auto_names(model: Model) -> tuple[dict[str, str], dict[str, str]]:
    """(layer names, merge block names) -> Keras's automatic names (keras_auto_names)."""
    used: dict[str, int] = {"input_layer": 1}
    out: dict[str, str] = {}
    blocks: dict[str, str] = {}

    def walk(nodes: list[Node]) -> None:
        for node in nodes:
            if isinstance(node, Block):
                for branch in node.branches:
                    walk(branch)
                if node.merge is not None:
                    blocks[node.name] = _unique(to_snake_case(MERGE_CLASSES[node.merge]), used)
                continue
            cls = _class_name(node)
            if node.kind in ("rnn", "lstm", "gru") and node.options.get("bidirectional"):
                _unique(to_snake_case(_RECURRENT_CLASS[node.kind]), used)
            out[node.name] = _unique(to_snake_case(cls), used)
            if node.kind == "attention":
                _unique("softmax", used)
                _unique("dropout", used)

    walk(model.body)
    return out, blocks


def load_keras_named(path: str, model: Model) -> dict[str, Any]:
    """A checkpoint whose arrays are named after Keras's automatic layer names
    (`conv2d.kernel`, `conv2d_1.kernel`, ...), validated and renamed to the model's layers."""
    from nnc.lang.npz import read_npz
    from nnc.lang.weights import validate

    back = {v: k for k, v in keras_auto_names(model).items()}
    return validate(model, rename_weights(read_npz(path, "weights"), back), source=f"weights {path} (Keras names)")


def rename_weights(weights: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """`LAYER.var` arrays renamed by layer (`names`: old layer name -> new)."""
    out = {}
    for key, a in weights.items():
        layer, _, var = key.partition(".")
        out[f"{names.get(layer, layer)}.{var}"] = a
    return out


# --- nnc -> Keras configs ---------------------------------------------------------------------

_RECURRENT_CLASS = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
_SIMPLE_CLASS = {
    "conv1d": "Conv1D", "conv2d": "Conv2D", "maxpool1d": "MaxPooling1D", "maxpool2d": "MaxPooling2D",
    "avgpool1d": "AveragePooling1D", "avgpool2d": "AveragePooling2D", "flatten": "Flatten", "dense": "Dense",
    "dropout": "Dropout", "leaky_relu": "LeakyReLU", "elu": "ELU", "prelu": "PReLU", "embedding": "Embedding",
    "batchnorm": "BatchNormalization", "layernorm": "LayerNormalization",
    "separable_conv1d": "SeparableConv1D", "separable_conv2d": "SeparableConv2D",
    "depthwise_conv1d": "DepthwiseConv1D", "depthwise_conv2d": "DepthwiseConv2D",
    "conv1d_transpose": "Conv1DTranspose", "conv2d_transpose": "Conv2DTranspose",
    "upsampling1d": "UpSampling1D", "upsampling2d": "UpSampling2D", "zeropad1d": "ZeroPadding1D",
    "zeropad2d": "ZeroPadding2D", "cropping1d": "Cropping1D", "cropping2d": "Cropping2D", "reshape": "Reshape",
    "permute": "Permute", "repeat_vector": "RepeatVector", "spatial_dropout1d": "SpatialDropout1D",
    "spatial_dropout2d": "SpatialDropout2D", "attention": "MultiHeadAttention",
}


def _class_name(layer: Layer) -> str:
    k = layer.kind
    if k in _RECURRENT_CLASS:
        return "Bidirectional" if layer.options["bidirectional"] else _RECURRENT_CLASS[k]
    if k in ("globalmaxpool", "globalavgpool"):
        what = "Max" if k == "globalmaxpool" else "Average"
        return f"Global{what}Pooling{1 if len(layer.input_shape) == 2 else 2}D"
    if k in _SIMPLE_CLASS:
        return _SIMPLE_CLASS[k]
    if k in ACTIVATIONS:
        return "Activation"
    raise UserError(f"layer {layer.name}: {k} has no Keras 3 layer to export it as", exit_code=1,
                    help="position_embedding is keras_hub's (not Keras's own), so a Keras file cannot hold it")


def _keras_activation(name: str, where: str) -> str:
    if name == "gelu_tanh":
        raise UserError(f"{where}: activation=gelu_tanh is keras.activations.gelu(approximate=True), which a "
                        "Keras config cannot name", exit_code=1, help="use activation=gelu (exact) to export")
    return name


def _regularizer(l1: float, l2: float):
    if not l1 and not l2:
        return None
    return {"module": "keras.regularizers", "class_name": "L1L2", "config": {"l1": float(l1), "l2": float(l2)},
            "registered_name": None}


def _dtype_policy() -> dict:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def layer_config(layer: Layer, name: str) -> tuple[str, dict]:
    """(Keras class name, config) of an nnc layer: Keras's arguments for nnc's options."""
    k, o = layer.kind, layer.options
    cls = _class_name(layer)
    cfg: dict[str, Any] = {"name": name, "trainable": True, "dtype": _dtype_policy()}
    act = lambda key="activation": _keras_activation(o[key], f"layer {layer.name}")  # noqa: E731
    reg = _regularizer(o.get("l1", 0.0), o.get("l2", 0.0))
    if k in ("conv1d", "conv2d"):
        cfg.update(filters=o["filters"], kernel_size=list(o["kernel"]), strides=list(o["stride"]), padding=o["padding"],
                   data_format="channels_last", dilation_rate=list(o["dilation"]), groups=o["groups"],
                   activation=act(), use_bias=o["use_bias"], kernel_regularizer=reg)
    elif k in ("separable_conv1d", "separable_conv2d", "depthwise_conv1d", "depthwise_conv2d"):
        if k.startswith("separable"):
            cfg.update(filters=o["filters"], depthwise_regularizer=reg, pointwise_regularizer=reg)
        else:
            cfg.update(depthwise_regularizer=reg)
        cfg.update(kernel_size=list(o["kernel"]), strides=list(o["stride"]), padding=o["padding"],
                   data_format="channels_last", depth_multiplier=o["depth_multiplier"],
                   dilation_rate=list(o["dilation"]), activation=act(), use_bias=o["use_bias"])
    elif k in ("conv1d_transpose", "conv2d_transpose"):
        cfg.update(filters=o["filters"], kernel_size=list(o["kernel"]), strides=list(o["stride"]), padding=o["padding"],
                   data_format="channels_last", activation=act(), use_bias=o["use_bias"], kernel_regularizer=reg)
    elif k in ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"):
        cfg.update(pool_size=list(o["pool"]), strides=list(o["stride"]) if o["stride"] is not None else None,
                   padding=o["padding"], data_format="channels_last")
    elif k in ("globalmaxpool", "globalavgpool"):
        cfg.update(data_format="channels_last", keepdims=False)
    elif k == "dense":
        cfg.update(units=o["units"], activation=act(), use_bias=o["use_bias"], kernel_regularizer=reg)
    elif k in ("dropout", "spatial_dropout1d", "spatial_dropout2d"):
        if k != "dropout":  # SpatialDropout's __init__ takes no `trainable` (its get_config leaves it out)
            del cfg["trainable"]
        cfg.update(rate=o["rate"])
    elif k == "leaky_relu":
        cfg.update(negative_slope=o["negative_slope"])
    elif k == "elu":
        cfg.update(alpha=o["alpha"])
    elif k in ACTIVATIONS:
        cfg.update(activation=_keras_activation(k, f"layer {layer.name}"))
    elif k == "embedding":
        cfg.update(input_dim=o["vocab"], output_dim=o["dim"], embeddings_regularizer=reg, mask_zero=False)
    elif k in _RECURRENT_CLASS:
        inner = {"name": f"forward_{k if k != 'rnn' else 'simple_rnn'}" if o["bidirectional"] else name,
                 "trainable": True, "dtype": _dtype_policy(), "units": o["units"],
                 "return_sequences": o["return_sequences"], "go_backwards": o["go_backwards"],
                 "dropout": o["dropout"], "recurrent_dropout": o["recurrent_dropout"],
                 "activation": act(), "kernel_regularizer": reg}
        if k != "rnn":
            inner["recurrent_activation"] = act("recurrent_activation")
        if k == "gru":
            inner["reset_after"] = o["reset_after"]
        if not o["bidirectional"]:
            return cls, inner
        cfg.update(merge_mode=o["merge"], layer={"module": "keras.layers", "class_name": _RECURRENT_CLASS[k],
                                                  "config": inner, "registered_name": None})
    elif k == "batchnorm":
        cfg.update(axis=-1, momentum=o["momentum"], epsilon=o["epsilon"], center=o["center"], scale=o["scale"])
    elif k == "layernorm":
        cfg.update(axis=-1, epsilon=o["epsilon"], center=o["center"], scale=o["scale"])
    elif k == "upsampling1d":
        cfg.update(size=o["size"])
    elif k == "upsampling2d":
        cfg.update(size=list(o["size"]), data_format="channels_last", interpolation=o["interpolation"])
    elif k in ("zeropad1d", "cropping1d"):
        cfg.update({"padding" if k == "zeropad1d" else "cropping": list(o["padding" if k == "zeropad1d" else "cropping"][0])})
    elif k in ("zeropad2d", "cropping2d"):
        key = "padding" if k == "zeropad2d" else "cropping"
        cfg.update({key: [list(p) for p in o[key]], "data_format": "channels_last"})
    elif k == "reshape":
        cfg.update(target_shape=list(o["shape"]))
    elif k == "permute":
        cfg.update(dims=list(o["axes"]))
    elif k == "repeat_vector":
        cfg.update(n=o["n"])
    elif k == "attention":
        cfg.update(num_heads=o["heads"], key_dim=o["key_dim"], value_dim=o["value_dim"] or o["key_dim"],
                   dropout=o["dropout"], use_bias=o["use_bias"], output_shape=None, attention_axes=None,
                   kernel_regularizer=reg)
    elif k in ("flatten", "prelu"):
        pass
    else:  # pragma: no cover - _class_name refused it already
        raise UserError(f"layer {layer.name}: {k} cannot be exported to Keras", exit_code=1)
    return cls, cfg


def _tensor(shape: tuple[int, ...], dtype: str, source: str) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [None, *shape], "dtype": dtype, "keras_history": [source, 0, 0]}}


def _layer_entry(cls: str, cfg: dict, build: dict | None, module: str = "keras.layers") -> dict:
    e = {"module": module, "class_name": cls, "config": cfg, "registered_name": None}
    if build is not None:
        e["build_config"] = build
    return e


def _slot_vars(layer: Layer, weights: dict[str, Any]) -> list[tuple[str, list]]:
    """(sub-path under the layer's slot, arrays in Keras's order) of one layer's variables."""
    arrays = [weights[f"{layer.name}.{w}"] for w in layer.weights]
    if layer.kind in _RECURRENT_CLASS:
        if layer.options["bidirectional"]:
            return [("", []), ("forward_layer", []), ("forward_layer/cell", arrays[:3]),
                    ("backward_layer", []), ("backward_layer/cell", arrays[3:])]
        return [("", []), ("cell", arrays)]
    if layer.kind == "attention":
        per = 2 if layer.options["use_bias"] else 1
        parts = ("query_dense", "key_dense", "value_dense", "output_dense")
        return [("", []), ("_dropout_layer", []), ("_softmax", [])] + [
            (p, arrays[i * per:(i + 1) * per]) for i, p in enumerate(parts)]
    return [("", arrays)]


@dataclass
class _Exported:
    config: dict
    layers: list[tuple[str, Layer | None]]  # (Keras class, layer) in model.layers order (None: no weights)


def keras_layer_order(ops: list[tuple[str, list[str]]], output: str) -> list[str]:
    """The order of `model.layers` Keras computes for a functional graph (keras.src.ops.function
    map_graph): operations by decreasing depth (the longest path to the output), ties in the
    order a depth-first walk from the output first meets them. `ops`: (name, input names)."""
    inputs_of = dict(ops)
    order: list[str] = []  # nodes from inputs to output (post-order)
    first_seen: dict[str, int] = {}
    done: set[str] = set()

    def visit(n: str) -> None:
        stack = [(n, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                if node in done:
                    continue
                first_seen.setdefault(node, len(first_seen))
            ins = inputs_of[node]
            while i < len(ins) and ins[i] in done:
                i += 1
            if i < len(ins):
                stack.append((node, i + 1))
                if ins[i] not in done:
                    stack.append((ins[i], 0))
                continue
            if node not in done:
                done.add(node)
                order.append(node)

    visit(output)
    depth: dict[str, int] = {}
    for node in reversed(order):
        d = depth.setdefault(node, 0)
        for parent in inputs_of[node]:
            depth[parent] = max(depth.get(parent, 0), d + 1)
    return sorted(order, key=lambda n: (-depth[n], first_seen[n]))


def export_config(model: Model, names: dict[str, str]) -> _Exported:
    """The config.json of a model: Sequential for a chain, Functional for blocks and attention.
    `names`: nnc layer (and block) name -> Keras layer name."""
    inp = model.input
    dtype = inp.dtype
    input_name = names.get(inp.name, inp.name)
    input_entry = _layer_entry("InputLayer", {"batch_shape": [None, *inp.shape], "dtype": dtype, "sparse": False,
                                              "ragged": False, "name": input_name, "optional": False}, None)
    chain = not any(isinstance(n, Block) for n in model.body) and not any(l.kind == "attention" for l in model.layers)
    if chain:
        entries = [input_entry]
        made: list[tuple[str, Layer | None]] = []
        for layer in model.layers:
            cls, cfg = layer_config(layer, names[layer.name])
            entries.append(_layer_entry(cls, cfg, {"input_shape": [None, *layer.input_shape]}))
            made.append((cls, layer))
        config = {"module": "keras", "class_name": "Sequential",
                  "config": {"name": model.name, "trainable": True, "dtype": _dtype_policy(), "layers": entries},
                  "registered_name": None, "build_config": {"input_shape": [None, *inp.shape]}, "compile_config": None}
        return _Exported(config, made)

    entries_by_name: dict[str, dict] = {}
    ops: list[tuple[str, list[str]]] = [(input_name, [])]
    cls_of: dict[str, tuple[str, Layer | None]] = {input_name: ("InputLayer", None)}
    entries_by_name[input_name] = {**input_entry, "name": input_name, "inbound_nodes": []}
    shapes: dict[str, tuple[tuple[int, ...], str]] = {input_name: (inp.shape, dtype)}

    def stack(nodes: list[Node], x: str) -> str:
        for node in nodes:
            if isinstance(node, Block):
                outs = [stack(branch, x) for branch in node.branches]
                if node.merge is None:
                    x = outs[0]
                    continue
                mname = names.get(node.name, node.name)
                cls = MERGE_CLASSES[node.merge]
                cfg = {"name": mname, "trainable": True, "dtype": _dtype_policy()}
                if cls == "Concatenate":
                    cfg["axis"] = node.options.get("axis", -1)
                args = [[_tensor(*shapes[o], o) for o in outs]]
                build = {"input_shape": [[None, *shapes[o][0]] for o in outs]}
                entries_by_name[mname] = {**_layer_entry(cls, cfg, build), "name": mname,
                                          "inbound_nodes": [{"args": args, "kwargs": {}}]}
                ops.append((mname, outs))
                cls_of[mname] = (cls, None)
                shapes[mname] = (node.output_shape, "float32")
                x = mname
            else:
                kname = names[node.name]
                cls, cfg = layer_config(node, kname)
                t = _tensor(*shapes[x], x)
                if node.kind == "attention":
                    build = {"shapes_dict": {"query_shape": [None, *node.input_shape],
                                             "value_shape": [None, *node.input_shape]}}
                    inbound = {"args": [t, t], "kwargs": {"use_causal_mask": bool(node.options["causal"])}}
                    ins = [x, x]
                else:
                    build = {"input_shape": [None, *node.input_shape]}
                    inbound = {"args": [t], "kwargs": {}}
                    ins = [x]
                entries_by_name[kname] = {**_layer_entry(cls, cfg, build), "name": kname, "inbound_nodes": [inbound]}
                ops.append((kname, ins))
                cls_of[kname] = (cls, node)
                shapes[kname] = (node.output_shape, "float32")
                x = kname
        return x

    out = stack(model.body, input_name)
    if out == input_name:
        raise UserError(f"{model.name} has no layers: a Keras model needs at least one", exit_code=1)
    order = keras_layer_order([(n, list(dict.fromkeys(i))) for n, i in ops], out)
    config = {"module": "keras.src.models.functional", "class_name": "Functional",
              "config": {"name": model.name, "trainable": True, "layers": [entries_by_name[n] for n in order],
                         "input_layers": [input_name, 0, 0], "output_layers": [out, 0, 0]},
              "registered_name": "Functional", "build_config": {"input_shape": None}, "compile_config": None}
    return _Exported(config, [cls_of[n] for n in order])


def export_keras(model: Model, weights: dict[str, Any], path: str, inputs: tuple[str, ...] = (),
                 keras_names: bool = False) -> None:
    """Write `model` with `weights` (nnc checkpoint names) as a Keras 3 `.keras` archive."""
    import h5py
    import numpy as np

    from nnc.lang.weights import atomic_open

    if keras_names:
        layers, blocks = _auto_names(model)
        names = {**layers, **blocks}
    else:
        names = {l.name: l.name for l in model.layers}
        _block_names(model.body, names)  # block names name the merge layers
    exported = export_config(model, names)
    meta = {"keras_version": "3.0.0", "date_saved": "1970-01-01@00:00:00"}

    with tempfile.TemporaryDirectory(prefix="nnc-keras-") as tmp:
        h5path = os.path.join(tmp, "model.weights.h5")
        with h5py.File(h5path, "w") as h:
            used: dict[str, int] = {}
            root = h.create_group("layers")
            for cls, layer in exported.layers:
                slot = root.create_group(_unique(to_snake_case(cls), used))
                parts = _slot_vars(layer, weights) if layer is not None else [("", [])]
                for sub, arrays in parts:
                    g = slot.require_group(f"{sub}/vars" if sub else "vars")
                    if not sub:
                        g.attrs["name"] = names.get(layer.name, layer.name) if layer is not None else cls
                    for i, a in enumerate(arrays):
                        g.create_dataset(str(i), data=np.asarray(a, dtype=np.float32))
            h.create_group("vars").attrs["name"] = model.name
        with atomic_open(path, "wb", inputs=inputs) as f:
            # Keras writes its archives deflated? It reads both; stored is what Keras 3 writes.
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
                z.writestr("metadata.json", json.dumps(meta))
                z.writestr("config.json", json.dumps(exported.config))
                z.write(h5path, "model.weights.h5")


def _block_names(nodes: list[Node], names: dict[str, str]) -> None:
    for node in nodes:
        if isinstance(node, Block):
            names[node.name] = node.name
            for branch in node.branches:
                _block_names(branch, names)


# --- Keras -> nnc -----------------------------------------------------------------------------


class Unsupported(Exception):
    """A Keras layer (or a setting of one) that nnc has no kind or option for."""


@dataclass
class KLayer:
    """One layer of a Keras config: its class, config, and the names of the layers it reads."""

    name: str
    cls: str
    config: dict
    inputs: list[str] = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)


@dataclass
class KerasFile:
    """What a .keras or .h5 holds: the model's name, input, layers (a DAG) and weights by layer name."""

    path: str
    name: str
    input: KLayer
    layers: list[KLayer]  # without the input, in the config's order
    output: str
    arrays: dict[str, list]  # layer name -> its variables in Keras's order (numpy arrays)
    sequential: bool
    compile_config: dict | None = None  # model.compile's loss, optimizer, metrics (when saved compiled)


def _load_json(data: bytes, what: str):
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise UserError(f"{what} is not valid JSON: {str(e)[:200]}", exit_code=1) from None


def _read_member(z: zipfile.ZipFile, name: str, path: str, limit: int | None = None) -> bytes:
    limit = MAX_CONFIG_BYTES if limit is None else limit
    try:
        info = z.getinfo(name)
    except KeyError:
        raise UserError(f"{path} is not a Keras 3 .keras archive: it has no {name}", exit_code=1) from None
    if info.file_size > limit:
        raise UserError(f"{path}: {name} is {info.file_size:,} bytes, more than a model's config can be "
                        f"({limit:,}); refused unread", exit_code=1)
    with z.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{path}: {name} unpacks to more than {limit:,} bytes; refused", exit_code=1)
    return data


def read_keras_file(path: str) -> KerasFile:
    """Read a `.keras` archive or a legacy `.h5` (chosen by content, not by suffix)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return _read_h5(path)
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is neither a Keras 3 .keras archive (a zip) nor a Keras HDF5 file", exit_code=1)
    try:
        with zipfile.ZipFile(path) as z:
            config = _load_json(_read_member(z, "config.json", path), f"{path}: config.json")
            info = z.getinfo("model.weights.h5") if "model.weights.h5" in z.namelist() else None
            arrays: dict[str, list] = {}
            if info is not None:
                refuse_past_memory(info.file_size, path, "its model.weights.h5")
                with tempfile.TemporaryDirectory(prefix="nnc-import-") as tmp:
                    h5path = os.path.join(tmp, "model.weights.h5")
                    with z.open(info) as src, open(h5path, "wb") as dst:
                        left = info.file_size + 1
                        while left > 0:
                            chunk = src.read(min(1 << 20, left))
                            if not chunk:
                                break
                            dst.write(chunk)
                            left -= len(chunk)
                    if left <= 0:
                        raise UserError(f"{path}: model.weights.h5 unpacks to more than it declares", exit_code=1)
                    model = _parse_config(config, path)
                    arrays = _read_keras3_weights(h5path, model, path)
                    model.arrays = arrays
                    return model
            model = _parse_config(config, path)
            model.arrays = arrays
            return model
    except zipfile.BadZipFile as e:
        raise UserError(f"{path} is not a readable .keras archive: {e}", exit_code=1) from None


def _h5_open(path: str):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path} is not a readable HDF5 file: {e}", exit_code=1) from None


def _vars(group) -> list:
    if group is None or "vars" not in group:
        return []
    v = group["vars"]
    keys = sorted((k for k in v.keys()), key=lambda k: int(k) if k.isdigit() else 1 << 30)
    return [_array(v[k]) for k in keys]


def _array(ds):
    """An HDF5 dataset as a float array, its declared size checked against memory first."""
    import h5py
    import numpy as np

    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiub":
        raise UserError(f"{ds.file.filename}: {ds.name} is not a numeric array", exit_code=1)
    refuse_past_memory(int(ds.size) * ds.dtype.itemsize, ds.file.filename, ds.name)
    return np.asarray(ds[()])


def _read_keras3_weights(h5path: str, model: KerasFile, path: str) -> dict[str, list]:
    """Layer name -> arrays, from model.weights.h5: slots are matched by their `vars` group's
    `name` attribute (the layer's name), which Keras writes for every layer."""
    out: dict[str, list] = {}
    by_name = {l.name: l for l in model.layers}
    with _h5_open(h5path) as h:
        layers = h.get("layers")
        if layers is None:
            return out
        for slot in layers.values():
            v = slot.get("vars")
            if v is None:
                continue
            name = v.attrs.get("name")
            if isinstance(name, bytes):
                name = name.decode()
            kl = by_name.get(name)
            if kl is None:
                continue
            if kl.cls in ("SimpleRNN", "LSTM", "GRU"):
                out[name] = _vars(slot.get("cell"))
            elif kl.cls == "Bidirectional":
                out[name] = _vars(slot.get("forward_layer/cell")) + _vars(slot.get("backward_layer/cell"))
            elif kl.cls == "MultiHeadAttention":
                out[name] = [a for p in ("query_dense", "key_dense", "value_dense", "output_dense")
                             for a in _vars(slot.get(p))]
            else:
                out[name] = _vars(slot)
    return out


def _read_h5(path: str) -> KerasFile:
    with _h5_open(path) as h:
        raw = h.attrs.get("model_config")
        if raw is None:
            raise UserError(f"{path} is an HDF5 file without a model_config: a weights-only file, not a model",
                            exit_code=1, help="save the whole model (model.save('model.h5') or .keras)")
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        if len(raw) > MAX_CONFIG_BYTES:
            raise UserError(f"{path}: model_config is more than {MAX_CONFIG_BYTES:,} bytes; refused", exit_code=1)
        model = _parse_config(_load_json(raw, f"{path}: model_config"), path)
        tc = h.attrs.get("training_config")
        if tc is not None and len(tc) <= MAX_CONFIG_BYTES:
            tc = _load_json(tc.decode("utf-8", "replace") if isinstance(tc, bytes) else tc, f"{path}: training_config")
            model.compile_config = tc if isinstance(tc, dict) else None
        mw = h.get("model_weights", h)
        for kl in model.layers:
            g = mw.get(kl.name) if kl.name in mw else None
            if g is None:
                continue
            wn = g.attrs.get("weight_names", [])
            arrays = []
            for n in list(wn):
                n = n.decode() if isinstance(n, bytes) else str(n)
                if n not in g:
                    raise UserError(f"{path}: layer {kl.name} lists weight {n}, which is missing", exit_code=1)
                arrays.append(_array(g[n]))
            model.arrays[kl.name] = arrays
    return model


def _history_names(obj) -> list[str]:
    """The layer names a Keras 3 node's args refer to (`__keras_tensor__` keras_history), in order."""
    out: list[str] = []
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(str(obj["config"]["keras_history"][0]))
        else:
            for v in obj.values():
                out.extend(_history_names(v))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(_history_names(v))
    return out


def _inbound(entry: dict) -> tuple[list[str], dict]:
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise Unsupported(f"the layer is called {len(nodes)} times (shared weights)")
    if not nodes:
        return [], {}
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3
        return _history_names(node.get("args", [])), dict(node.get("kwargs") or {})
    # legacy: [[name, node_index, tensor_index, kwargs], ...]
    names, kwargs = [], {}
    for t in node:
        names.append(str(t[0]))
        if len(t) > 3 and isinstance(t[3], dict):
            kwargs.update(t[3])
    return names, kwargs


def _input_of(cfg: dict, name: str) -> KLayer:
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    return KLayer(name, "InputLayer", {"batch_shape": shape, "dtype": cfg.get("dtype", "float32")})


def _parse_config(config: Any, path: str) -> KerasFile:
    try:
        kf = _parse_config_unchecked(config, path)
        cc = config.get("compile_config")
        kf.compile_config = cc if isinstance(cc, dict) else None
        return kf
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as e:
        raise UserError(f"{path}: the model's config is malformed ({type(e).__name__}: {str(e)[:200]})",
                        exit_code=1) from None


def _parse_config_unchecked(config: Any, path: str) -> KerasFile:
    if not isinstance(config, dict) or "config" not in config:
        raise UserError(f"{path}: the model's config is not a Keras model config", exit_code=1)
    cls = config.get("class_name")
    c = config["config"]
    if cls == "Sequential":
        entries = c["layers"] if isinstance(c, dict) else c
        layers: list[KLayer] = []
        inp: KLayer | None = None
        for e in entries:
            ec = e["config"]
            if e["class_name"] == "InputLayer":
                inp = _input_of(ec, ec.get("name", "input_layer"))
                continue
            if inp is None:
                shape = ec.get("batch_input_shape") or ec.get("batch_shape") or (
                    (e.get("build_config") or {}).get("input_shape")) or (c.get("build_input_shape") if isinstance(c, dict) else None)
                inp = KLayer("input_layer", "InputLayer", {"batch_shape": shape, "dtype": "float32"})
            if isinstance(ec, dict) and e.get("build_config"):
                ec = {**ec, "build_config": e["build_config"]}
            layers.append(KLayer(str(ec["name"]), e["class_name"], ec,
                                 [layers[-1].name if layers else inp.name]))
        if inp is None:
            raise UserError(f"{path}: the Sequential model has no layers", exit_code=1)
        name = c.get("name", "model") if isinstance(c, dict) else "model"
        return KerasFile(path, str(name), inp, layers, layers[-1].name if layers else inp.name, {}, True)
    if cls in ("Functional", "Model"):
        ins, outs = c["input_layers"], c["output_layers"]
        ins = ins if ins and isinstance(ins[0], list) else [ins]
        outs = outs if outs and isinstance(outs[0], list) else [outs]
        if len(ins) != 1 or len(outs) != 1:
            raise UserError(f"{path}: the model has {len(ins)} inputs and {len(outs)} outputs; nnc specs have one "
                            "input and one output", exit_code=1)
        layers, inp = [], None
        for e in c["layers"]:
            ec = e["config"]
            name = str(e.get("name") or ec["name"])
            if e["class_name"] == "InputLayer":
                if name == ins[0][0]:
                    inp = _input_of(ec, name)
                continue
            if isinstance(ec, dict) and e.get("build_config"):
                ec = {**ec, "build_config": e["build_config"]}
            try:
                inputs, kwargs = _inbound(e)
            except Unsupported as u:
                inputs, kwargs = [], {}
                ec = {**ec, "_nnc_problem": str(u)}
            layers.append(KLayer(name, e["class_name"], ec, inputs, kwargs))
        if inp is None:
            raise UserError(f"{path}: the model's input layer {ins[0][0]} is missing from its config", exit_code=1)
        return KerasFile(path, str(c.get("name", "model")), inp, layers, str(outs[0][0]), {}, False)
    raise UserError(f"{path}: a {cls} model is not a Sequential or Functional model nnc can read", exit_code=1,
                    help="subclassed models keep their structure in Python code, which nnc does not run")


# --- Keras layer -> nnc kind and options --------------------------------------------------------

MERGE_KINDS = {v: k for k, v in MERGE_CLASSES.items()}
_KERAS_ACTIVATIONS = {a: a for a in ACTIVATIONS if a != "gelu_tanh"}
_KERAS_ACTIVATIONS[None] = "linear"  # type: ignore[index]


def _act(v) -> str:
    if isinstance(v, dict) and v.get("class_name") == "function" and isinstance(v.get("config"), str):
        v = v["config"]  # Keras 3's serialization of a built-in function
    if v is None or (isinstance(v, str) and v in _KERAS_ACTIVATIONS):
        return _KERAS_ACTIVATIONS[v]
    raise Unsupported(f"activation {_short(v)} (nnc has {', '.join(a for a in ACTIVATIONS if a != 'gelu_tanh')})")


def _short(v: Any, limit: int = 160) -> str:
    try:
        text = json.dumps(v, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reg(cfg: dict, *keys: str) -> dict:
    """l1=/l2= of the kernel regularizer(s); the same one on every key (separable's two kernels)."""
    found = []
    for key in keys:
        r = cfg.get(key)
        if r is None:
            found.append((0.0, 0.0))
            continue
        if not isinstance(r, dict) or r.get("class_name") not in ("L1L2", "L1", "L2"):
            raise Unsupported(f"{key} {_short(r)} (nnc has L1/L2 kernel penalties: l1=, l2=)")
        rc = r.get("config") or {}
        found.append((float(rc.get("l1", 0.0) or 0.0), float(rc.get("l2", 0.0) or 0.0)))
    if len(set(found)) > 1:
        raise Unsupported(f"different regularizers on {' and '.join(keys)}")
    l1, l2 = found[0]
    return {"l1": l1, "l2": l2}


_NULL_KEYS = ("bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint",
              "recurrent_regularizer", "recurrent_constraint", "embeddings_constraint", "depthwise_constraint",
              "pointwise_constraint", "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint",
              "alpha_regularizer", "alpha_constraint", "noise_shape", "output_padding", "lora_rank")


def _require(cfg: dict, **allowed) -> None:
    """Settings nnc has no option for must have Keras's default (one of the allowed values)."""
    for key in _NULL_KEYS:
        if cfg.get(key) is not None:
            raise Unsupported(f"{key}={_short(cfg[key])}")
    for key, ok in allowed.items():
        if key in cfg and cfg[key] not in (ok if isinstance(ok, tuple) else (ok,)):
            raise Unsupported(f"{key}={_short(cfg[key])}")


def _size(v, n: int) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,) * n
    v = tuple(int(x) for x in v)
    if len(v) != n:
        raise Unsupported(f"a {len(v)}-element size where {n} is needed")
    return v


def _pads(v, n: int) -> tuple[tuple[int, int], ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        return ((v, v),) * n
    v = list(v)
    if n == 1:
        return ((int(v[0]), int(v[1])),) if len(v) == 2 else ((int(v[0]), int(v[0])),)
    if all(isinstance(p, int) for p in v):  # (rows, cols): symmetric
        return tuple((int(p), int(p)) for p in v)
    return tuple((int(p[0]), int(p[1])) for p in v)


_CONV = ("Conv1D", "Conv2D")
_POOLS = {"MaxPooling1D": "maxpool1d", "MaxPooling2D": "maxpool2d", "AveragePooling1D": "avgpool1d",
          "AveragePooling2D": "avgpool2d", "MaxPool1D": "maxpool1d", "MaxPool2D": "maxpool2d",
          "AvgPool1D": "avgpool1d", "AvgPool2D": "avgpool2d"}
_GLOBAL = {"GlobalMaxPooling1D": "globalmaxpool", "GlobalMaxPooling2D": "globalmaxpool",
           "GlobalAveragePooling1D": "globalavgpool", "GlobalAveragePooling2D": "globalavgpool",
           "GlobalMaxPool1D": "globalmaxpool", "GlobalMaxPool2D": "globalmaxpool",
           "GlobalAvgPool1D": "globalavgpool", "GlobalAvgPool2D": "globalavgpool"}
_RECURRENT_KIND = {v: k for k, v in _RECURRENT_CLASS.items()}


def nnc_layer(cls: str, cfg: dict) -> tuple[str, dict]:
    """(nnc kind, options by nnc name) of a Keras layer, or Unsupported."""
    if not isinstance(cfg, dict):
        raise Unsupported("its config is not a mapping")
    if cfg.get("_nnc_problem"):
        raise Unsupported(cfg["_nnc_problem"])
    _require(cfg, data_format=("channels_last", None))
    cfg = {k: v for k, v in cfg.items() if k != "build_config"} if cls not in ("BatchNormalization", "LayerNormalization") else cfg
    if cls in _CONV:
        n = 1 if cls == "Conv1D" else 2
        return cls.lower(), {"filters": cfg["filters"], "kernel": _size(cfg["kernel_size"], n),
                             "stride": _size(cfg.get("strides", 1), n), "padding": cfg.get("padding", "valid"),
                             "dilation": _size(cfg.get("dilation_rate", 1), n), "groups": cfg.get("groups", 1),
                             "activation": _act(cfg.get("activation")), "use_bias": cfg.get("use_bias", True),
                             **_reg(cfg, "kernel_regularizer")}
    if cls in _POOLS:
        kind = _POOLS[cls]
        n = int(kind[-2])
        pool = _size(cfg.get("pool_size", 2), n)
        stride = cfg.get("strides")
        stride = None if stride is None or _size(stride, n) == pool else _size(stride, n)
        return kind, {"pool": pool, "stride": stride, "padding": cfg.get("padding", "valid")}
    if cls in _GLOBAL:
        _require(cfg, keepdims=False)
        return _GLOBAL[cls], {}
    if cls == "Flatten":
        return "flatten", {}
    if cls == "Dense":
        return "dense", {"units": cfg["units"], "activation": _act(cfg.get("activation")),
                         "use_bias": cfg.get("use_bias", True), **_reg(cfg, "kernel_regularizer")}
    if cls in ("Dropout", "SpatialDropout1D", "SpatialDropout2D"):
        return {"Dropout": "dropout", "SpatialDropout1D": "spatial_dropout1d",
                "SpatialDropout2D": "spatial_dropout2d"}[cls], {"rate": float(cfg["rate"])}
    if cls == "Activation":
        a = _act(cfg.get("activation"))
        if a == "leaky_relu":  # the function's slope, 0.2, not the layer's 0.3
            return "leaky_relu", {"negative_slope": 0.2}
        if a == "elu":
            return "elu", {"alpha": 1.0}
        return a, {}
    if cls == "ReLU":
        mv, slope, th = cfg.get("max_value"), float(cfg.get("negative_slope", 0.0) or 0.0), cfg.get("threshold", 0.0)
        if th not in (0, 0.0, None):
            raise Unsupported(f"threshold={th}")
        if mv is None and slope == 0.0:
            return "relu", {}
        if mv is not None and float(mv) == 6.0 and slope == 0.0:
            return "relu6", {}
        if mv is None:
            return "leaky_relu", {"negative_slope": slope}
        raise Unsupported(f"max_value={mv} with negative_slope={slope}")
    if cls == "Softmax":
        if cfg.get("axis", -1) not in (-1, [-1]):
            raise Unsupported(f"axis={cfg.get('axis')}")
        return "softmax", {}
    if cls == "LeakyReLU":
        return "leaky_relu", {"negative_slope": float(cfg.get("negative_slope", cfg.get("alpha", 0.3)))}
    if cls == "ELU":
        return "elu", {"alpha": float(cfg.get("alpha", 1.0))}
    if cls == "PReLU":
        _require(cfg, shared_axes=None)
        return "prelu", {}
    if cls == "Embedding":
        _require(cfg, mask_zero=False, sparse=False)
        return "embedding", {"dim": cfg["output_dim"], "vocab": cfg["input_dim"], **_reg(cfg, "embeddings_regularizer")}
    if cls in _RECURRENT_KIND:
        return _recurrent(cls, cfg, False)
    if cls == "Bidirectional":
        inner = cfg["layer"]
        if inner.get("class_name") not in _RECURRENT_KIND:
            raise Unsupported(f"Bidirectional around {inner.get('class_name')}")
        if cfg.get("merge_mode") not in ("concat", "sum", "mul", "ave"):
            raise Unsupported(f"merge_mode={_short(cfg.get('merge_mode'))}")
        kind, opts = _recurrent(inner["class_name"], inner["config"], True)
        opts.update(bidirectional=True, merge=cfg["merge_mode"])
        return kind, opts
    if cls == "BatchNormalization":
        _require(cfg, synchronized=False, renorm=False, virtual_batch_size=None, adjustment=None)
        _last_axis(cfg)
        return "batchnorm", {"momentum": float(cfg.get("momentum", 0.99)), "epsilon": float(cfg.get("epsilon", 1e-3)),
                             "center": cfg.get("center", True), "scale": cfg.get("scale", True)}
    if cls == "LayerNormalization":
        _require(cfg, rms_scaling=False)
        _last_axis(cfg)
        return "layernorm", {"epsilon": float(cfg.get("epsilon", 1e-3)), "center": cfg.get("center", True),
                             "scale": cfg.get("scale", True)}
    if cls in ("SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D"):
        n = int(cls[-2])
        opts = {"kernel": _size(cfg["kernel_size"], n), "stride": _size(cfg.get("strides", 1), n),
                "padding": cfg.get("padding", "valid"), "depth_multiplier": cfg.get("depth_multiplier", 1),
                "dilation": _size(cfg.get("dilation_rate", 1), n), "activation": _act(cfg.get("activation")),
                "use_bias": cfg.get("use_bias", True)}
        if cls.startswith("Separable"):
            return f"separable_conv{n}d", {"filters": cfg["filters"], **opts,
                                            **_reg(cfg, "depthwise_regularizer", "pointwise_regularizer")}
        return f"depthwise_conv{n}d", {**opts, **_reg(cfg, "depthwise_regularizer")}
    if cls in ("Conv1DTranspose", "Conv2DTranspose"):
        n = int(cls[4])
        if _size(cfg.get("dilation_rate", 1), n) != (1,) * n:
            raise Unsupported(f"dilation_rate={cfg.get('dilation_rate')}")
        return f"conv{n}d_transpose", {"filters": cfg["filters"], "kernel": _size(cfg["kernel_size"], n),
                                       "stride": _size(cfg.get("strides", 1), n), "padding": cfg.get("padding", "valid"),
                                       "activation": _act(cfg.get("activation")), "use_bias": cfg.get("use_bias", True),
                                       **_reg(cfg, "kernel_regularizer")}
    if cls == "UpSampling1D":
        return "upsampling1d", {"size": int(cfg.get("size", 2))}
    if cls == "UpSampling2D":
        if cfg.get("interpolation", "nearest") not in ("nearest", "bilinear"):
            raise Unsupported(f"interpolation={cfg.get('interpolation')}")
        return "upsampling2d", {"size": _size(cfg.get("size", 2), 2), "interpolation": cfg.get("interpolation", "nearest")}
    if cls in ("ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D"):
        n = int(cls[-2])
        key = "padding" if cls.startswith("Zero") else "cropping"
        kind = ("zeropad" if key == "padding" else "cropping") + f"{n}d"
        return kind, {key: _pads(cfg.get(key, 1), n)}
    if cls == "Reshape":
        return "reshape", {"shape": tuple(int(d) for d in cfg["target_shape"])}
    if cls == "Permute":
        return "permute", {"axes": tuple(int(d) for d in cfg["dims"])}
    if cls == "RepeatVector":
        return "repeat_vector", {"n": int(cfg["n"])}
    if cls == "MultiHeadAttention":
        _require(cfg, output_shape=None, use_gate=False, sliding_window=None, attention_axes=(None, [1], -2, [-2]))
        return "attention", {"heads": cfg["num_heads"], "key_dim": cfg["key_dim"],
                             "value_dim": None if cfg.get("value_dim") in (None, cfg["key_dim"]) else cfg["value_dim"],
                             "dropout": float(cfg.get("dropout", 0.0)), "use_bias": cfg.get("use_bias", True),
                             **_reg(cfg, "kernel_regularizer")}
    if cls in ("InputLayer",):
        raise Unsupported("a second input")
    from nnc.lang.keras_names import KERAS_LAYERS_NOT_IN_NNC

    hint = KERAS_LAYERS_NOT_IN_NNC.get(cls)
    raise Unsupported("nnc has no such layer" + (f" ({hint})" if hint else ""))


def _last_axis(cfg: dict) -> None:
    """Normalization over the last axis only: Keras 3 saves -1, Keras 2 the axis's number."""
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis == -1:
        return
    shape = (cfg.get("build_config") or {}).get("input_shape") or cfg.get("batch_input_shape")
    if not (isinstance(axis, int) and isinstance(shape, list) and axis == len(shape) - 1):
        raise Unsupported(f"axis={_short(cfg.get('axis'))} (nnc normalizes the last axis)")


def _recurrent(cls: str, cfg: dict, wrapped: bool) -> tuple[str, dict]:
    _require(cfg, use_bias=True, return_state=False, stateful=False, time_major=False)
    kind = _RECURRENT_KIND[cls]
    opts = {"units": cfg["units"], "return_sequences": cfg.get("return_sequences", False),
            "go_backwards": bool(cfg.get("go_backwards", False)) and not wrapped,
            "dropout": float(cfg.get("dropout", 0.0)), "recurrent_dropout": float(cfg.get("recurrent_dropout", 0.0)),
            "activation": _act(cfg.get("activation", "tanh")), **_reg(cfg, "kernel_regularizer")}
    if wrapped and cfg.get("go_backwards"):
        raise Unsupported("a Bidirectional around a layer with go_backwards=True")
    if kind != "rnn":
        opts["recurrent_activation"] = _act(cfg.get("recurrent_activation", "sigmoid"))
    if kind == "gru":
        opts["reset_after"] = cfg.get("reset_after", True)
    return kind, opts


# --- the spec text ------------------------------------------------------------------------------


def _value_text(otype: str, v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if otype in ("size1", "size2"):
        return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))
    if otype == "pad1":
        (b, e), = v
        return str(b) if b == e else f"[{b}, {e}]"
    if otype == "pad2":
        (t, b), (left, r) = v
        if t == b and left == r:
            return str(t) if t == left else f"{t}x{left}"
        return f"[{t}, {b}, {left}, {r}]"
    if otype in ("shape", "axes"):
        return "[" + ", ".join(map(str, v)) + "]"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _default(otype: str, d):
    if otype in ("size1", "size2") and isinstance(d, int):
        return (d,) * int(otype[-1])
    if otype in ("pad1", "pad2") and isinstance(d, int):
        return ((d, d),) * int(otype[-1])
    return d


def layer_text(kind: str, opts: dict) -> str:
    """`kind positional key=value ...`: the options that differ from nnc's defaults."""
    spec = KINDS[kind]
    words = [kind]
    for o in spec.options:
        if o.name not in opts:
            continue
        v = opts[o.name]
        if not o.required and v == _default(o.type, o.default):
            continue
        if o.type == "float" and isinstance(v, float) and not o.required and o.default is not None \
                and float(v) == float(o.default):
            continue
        text = _value_text(o.type, v)
        words.append(text if o.name in spec.positional[:1] else f"{o.name}={text}")
    return " ".join(words)


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = {"model", "input", "expect", "train", "branch", "true", "false"}


@dataclass
class _Item:
    """A step of the imported tree: a layer (kind, options) or a block (merge, branches), or an
    unsupported layer (marked as a comment)."""

    kl: KLayer
    kind: str | None = None
    opts: dict = field(default_factory=dict)
    branches: list[list["_Item"]] | None = None
    problem: str | None = None


class _Names:
    """Keras names made valid, unique nnc names; equal to nnc's own numbering: left out."""

    def __init__(self):
        self.used: set[str] = set()
        self.count: dict[str, int] = {}
        self.mapping: dict[str, str] = {}

    def take(self, keras_name: str, kind: str) -> str | None:
        """The label to write (None: nnc's automatic name is already the Keras name)."""
        self.count[kind] = self.count.get(kind, 0) + 1
        auto = f"{kind}_{self.count[kind]}"
        name = re.sub(r"\W", "_", keras_name) or "layer"
        if not _NAME_RE.match(name):
            name = "_" + name
        if name.lower() in _RESERVED:
            name = name + "_"
        base, i = name, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        self.mapping[keras_name] = name
        return None if name == auto else name


def build_tree(kf: KerasFile) -> list[_Item]:
    """The model as nnc steps: a chain for a Sequential model; for a functional one, each merge
    layer becomes a block whose branches start at the merge's nearest common dominator (the
    tensor every path to it passes through). A graph that is not such a nest is refused."""
    items = {kl.name: kl for kl in kf.layers}
    if kf.sequential:
        return [_item(kl) for kl in kf.layers]
    inp = kf.input.name

    def inputs(name: str) -> list[str]:
        kl = items[name]
        ins = list(dict.fromkeys(kl.inputs)) if kl.cls == "MultiHeadAttention" else list(kl.inputs)
        for i in ins:
            if i != inp and i not in items:
                raise UserError(f"{kf.path}: layer {name} reads {i}, which is not in the model", exit_code=1)
        return ins

    # topological order of what the output depends on
    order: list[str] = []
    seen: set[str] = set()
    stack = [(kf.output, False)]
    while stack:
        n, expanded = stack.pop()
        if expanded:
            order.append(n)
            continue
        if n in seen:
            continue
        seen.add(n)
        stack.append((n, True))
        if n != inp:
            for i in inputs(n):
                if i not in seen:
                    stack.append((i, False))
    if inp not in seen:
        raise UserError(f"{kf.path}: the model's output does not depend on its input", exit_code=1)
    idom: dict[str, str | None] = {inp: None}
    depth: dict[str, int] = {inp: 0}

    def common(a: str, b: str) -> str:
        while a != b:
            if depth[a] >= depth[b]:
                a = idom[a]  # type: ignore[assignment]
            else:
                b = idom[b]  # type: ignore[assignment]
        return a

    for n in order:
        if n == inp:
            continue
        ins = inputs(n)
        if not ins:
            raise UserError(f"{kf.path}: layer {n} has no input", exit_code=1)
        d = ins[0]
        for i in ins[1:]:
            d = common(d, i)
        idom[n], depth[n] = d, depth[d] + 1

    used: list[str] = []

    def chain(f: str, t: str) -> list[_Item]:
        out: list[_Item] = []
        while t != f:
            if t == inp:
                raise UserError(f"{kf.path}: the functional graph is not a nest of blocks nnc can write "
                                "(a branch reads a tensor from outside its block)", exit_code=1)
            kl = items[t]
            used.append(t)
            ins = inputs(t)
            if kl.cls in MERGE_KINDS:
                d = idom[t]
                assert d is not None
                out.append(_Item(kl, MERGE_KINDS[kl.cls], branches=[chain(d, i) for i in ins]))
                t = d
            elif len(ins) != 1:
                raise UserError(f"{kf.path}: layer {t} ({kl.cls}) reads {len(ins)} tensors; nnc's layers read one "
                                "(merges excepted)", exit_code=1)
            else:
                out.append(_item(kl))
                t = ins[0]
        return out[::-1]

    tree = chain(inp, kf.output)
    if len(used) != len(set(used)):
        raise UserError(f"{kf.path}: the functional graph is not a nest of blocks nnc can write "
                        "(a layer's output feeds places that are not branches of one block)", exit_code=1)
    return tree


def _item(kl: KLayer) -> _Item:
    try:
        kind, opts = nnc_layer(kl.cls, kl.config)
        if kind == "attention":
            opts["causal"] = bool(kl.kwargs.get("use_causal_mask", False))
            extra = {k: v for k, v in kl.kwargs.items() if k not in ("use_causal_mask", "training", "mask")
                     and v is not None}
            if extra:
                raise Unsupported(f"called with {_short(extra)}")
        return _Item(kl, kind, opts)
    except Unsupported as u:
        return _Item(kl, problem=str(u))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        return _Item(kl, problem=f"malformed config ({type(e).__name__}: {str(e)[:120]})")


@dataclass
class Imported:
    text: str  # the spec, formatted
    names: dict[str, str]  # Keras layer name -> nnc layer name
    problems: list[tuple[str, str, str, str]]  # (name, class, reason, config) of unsupported layers
    model: Model | None = None
    weights: dict[str, Any] | None = None
    train: list[str] = field(default_factory=list)  # the train block's lines (and comments), from compile_config
    notes: list[str] = field(default_factory=list)  # warnings for stderr (nnc.tools.onnx_import)


def _spec_name(name: str) -> str:
    n = re.sub(r"\W", "_", name) or "model"
    return n if _NAME_RE.match(n) else "_" + n


def spec_from_keras(kf: KerasFile) -> Imported:
    """The spec text of a Keras model (unchecked), with unsupported layers marked as comments."""
    tree = build_tree(kf)
    shape = kf.input.config.get("batch_shape")
    if not isinstance(shape, list) or len(shape) < 2:
        raise UserError(f"{kf.path}: the model's input has no known shape (batch_shape {_short(shape)})", exit_code=1)
    dims = shape[1:]
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in dims):
        raise UserError(f"{kf.path}: the model's input shape {_short(shape)} has free dimensions; a spec's are fixed",
                        exit_code=1, help="rebuild the Keras model with keras.Input(shape=(...)) of known sizes, "
                                          "or write the spec by hand with the sizes you use")
    first = tree[0] if tree else None
    while first is not None and first.branches:
        first = next((b[0] for b in first.branches if b), None)
    names = _Names()
    names.take(kf.input.name, "input")
    if first is not None and first.kind == "embedding":
        input_line = f"input {names.mapping[kf.input.name]}: int64[{', '.join(map(str, dims))}] vocab={first.opts['vocab']}"
    else:
        input_line = f"input {names.mapping[kf.input.name]}: float32[{', '.join(map(str, dims))}]"
    problems: list[tuple[str, str, str, str]] = []
    lines = [f"# imported from {os.path.basename(kf.path)} by nnc import", f"model {_spec_name(kf.name)}", "",
             input_line, ""]
    block_count: dict[str, int] = {}

    def emit(items: list[_Item], indent: str) -> None:
        for it in items:
            if it.problem is not None:
                cfg = {k: v for k, v in it.kl.config.items() if k not in ("name", "trainable", "dtype", "_nnc_problem", "build_config")}
                problems.append((it.kl.name, it.kl.cls, it.problem, _short(cfg, 400)))
                lines.append(f"{indent}# unsupported: {it.kl.name} ({it.kl.cls}): {it.problem}")
                continue
            if it.branches is not None:
                kind = it.kind
                residual = kind == "add" and len(it.branches) == 2 and not it.branches[0]
                bkind = "residual" if residual else kind
                block_count[bkind] = block_count.get(bkind, 0) + 1
                auto = f"{bkind}_{block_count[bkind]}"
                names.take(it.kl.name, "__block__" + bkind)
                label = None if names.mapping[it.kl.name] == auto else names.mapping[it.kl.name]
                head = f"{label}: {bkind}" if label else bkind
                if kind == "concat":
                    axis = it.kl.config.get("axis", -1)
                    if axis != -1:
                        head += f" axis={axis}"
                lines.append(f"{indent}{head} {{")
                if residual:
                    emit(it.branches[1], indent + "  ")
                else:
                    for b in it.branches:
                        lines.append(f"{indent}  branch {{")
                        emit(b, indent + "    ")
                        lines.append(f"{indent}  }}")
                lines.append(f"{indent}}}")
                continue
            opts = dict(it.opts)
            if it.kind == "embedding" and first is not None and first.kind == "embedding" \
                    and opts["vocab"] == first.opts["vocab"]:
                opts.pop("vocab")  # the input's vocab=
            label = names.take(it.kl.name, it.kind)
            lines.append(f"{indent}{label + ': ' if label else ''}{layer_text(it.kind, opts)}")

    emit(tree, "")
    text = "\n".join(lines) + "\n"
    return Imported(text, names.mapping, problems, train=train_block(kf.compile_config))


def import_keras(path: str, keras_names: bool = False) -> Imported:
    """A Keras file as a checked spec and its checkpoint: the spec's layers keep the Keras names
    (checkpoint arrays `NAME.kernel`, ...; with `keras_names`, the arrays are named as Keras
    would name the layers in a fresh session instead), with `expect params` and `expect output`
    lines, formatted by nnc fmt. Unsupported layers: `problems` is not empty, `text` has them
    marked as comments, and there is no model."""
    import numpy as np

    from nnc.lang.checker import check_source
    from nnc.lang.errors import SpecError
    from nnc.lang.fmt import format_source

    kf = read_keras_file(path)
    imp = spec_from_keras(kf)
    if imp.problems:
        return imp
    r = check_source(imp.text, path + ".nnspec")
    if not r.ok:
        raise SpecError(r)
    model = r.model
    expected = {imp.names[k]: k for k in imp.names}
    if [l.name for l in model.layers if l.name not in expected]:
        # a name nnc numbered differently than the import assumed: name every layer explicitly
        raise UserError(f"{path}: internal naming mismatch: {[l.name for l in model.layers if l.name not in expected]}",
                        exit_code=3)
    weights: dict[str, Any] = {}
    for layer in model.layers:
        arrays = kf.arrays.get(expected[layer.name], [])
        wanted = list(layer.weights.items())
        if len(arrays) != len(wanted):
            raise UserError(f"{path}: layer {expected[layer.name]} has {len(arrays)} weight arrays; its nnc twin "
                            f"{layer.kind} needs {len(wanted)} ({', '.join(w for w, _ in wanted)})", exit_code=1)
        for (w, shape), a in zip(wanted, arrays):
            if tuple(a.shape) != tuple(shape):
                raise UserError(f"{path}: layer {expected[layer.name]}'s {w} has shape {list(a.shape)}, but the "
                                f"spec's {layer.kind} needs {list(shape)}", exit_code=1)
            weights[f"{layer.name}.{w}"] = np.asarray(a, dtype=np.float32)
    keras_total = sum(int(np.size(a)) for arrays in kf.arrays.values() for a in arrays)
    if keras_total != model.total_params:
        raise UserError(f"{path}: the Keras file holds {keras_total:,} weights, the spec counts "
                        f"{model.total_params:,}", exit_code=1)
    text = imp.text.rstrip("\n") + (f"\n\nexpect params == {model.total_params}\n"
                                     f"expect output == [{', '.join(map(str, model.output_shape))}]\n")
    if imp.train:
        with_train = text + "\n" + "\n".join(imp.train) + "\n"
        if check_source(with_train, path + ".nnspec").ok:
            text = with_train
        else:  # a setting the checker refuses: the block as comments, for the user to finish
            text += "\n# model.compile's settings, which do not check as a train block:\n" + "".join(
                f"# {line}\n" for line in imp.train)
    formatted, errors = format_source(text, path + ".nnspec")
    if formatted is None:  # pragma: no cover - the text checked
        raise UserError(f"{path}: the imported spec does not format: {errors[0].message}", exit_code=3)
    r = check_source(formatted, path + ".nnspec")
    if not r.ok:
        raise SpecError(r)
    imp.text, imp.model = formatted, r.model
    imp.weights = rename_weights(weights, keras_auto_names(r.model)) if keras_names else weights
    return imp


# --- model.compile -> the train block -----------------------------------------------------------

_LOSS_NAMES = {"sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
               "categorical_crossentropy": "categorical_crossentropy", "binary_crossentropy": "binary_crossentropy",
               "mse": "mse", "mean_squared_error": "mse", "mae": "mae", "mean_absolute_error": "mae",
               "huber": "huber", "kl_divergence": "kl_divergence", "kld": "kl_divergence",
               "kullback_leibler_divergence": "kl_divergence"}
_OPTIMIZER_KEYS = {"sgd": ("momentum", "nesterov", "weight_decay"), "rmsprop": ("rho", "momentum", "epsilon", "weight_decay"),
                   "adam": ("beta_1", "beta_2", "epsilon", "weight_decay", "amsgrad"),
                   "adamw": ("beta_1", "beta_2", "epsilon", "weight_decay", "amsgrad"),
                   "nadam": ("beta_1", "beta_2", "epsilon", "weight_decay"),
                   "adagrad": ("initial_accumulator_value", "epsilon", "weight_decay")}


def _f32(v) -> str:
    """A float Keras stored from float32 (0.0010000000474974513) as it was typed (0.001)."""
    import numpy as np

    return str(np.float32(v)) if float(np.float32(v)) == float(v) else repr(float(v))


def train_block(cc: dict | None) -> list[str]:
    """The `train { ... }` lines of a saved model.compile (loss, optimizer, metrics); what nnc
    cannot express is left as a comment inside the block."""
    if not cc:
        return []
    lines, notes = [], []
    try:
        loss = cc.get("loss")
        if isinstance(loss, dict):
            lc = loss.get("config") or {}
            name = to_snake_case(str(loss.get("class_name")))
            if lc.get("from_logits"):
                notes.append(f"loss {name} from_logits=True (nnc's losses read the model's outputs)")
                name = None
            extra = ""
            if name == "huber" and lc.get("delta", 1.0) != 1.0:
                extra = f" delta={_f32(lc['delta'])}"
            if lc.get("label_smoothing"):
                extra += f" label_smoothing={_f32(lc['label_smoothing'])}"
            loss = (name, extra)
        else:
            loss = (loss, "")
        if loss[0] in _LOSS_NAMES:
            lines.append(f"  loss {_LOSS_NAMES[loss[0]]}{loss[1]}")
        elif loss[0] is not None:
            notes.append(f"loss {_short(cc.get('loss'), 120)}")
        opt = cc.get("optimizer") or cc.get("optimizer_config")  # .keras, legacy .h5
        if isinstance(opt, str):
            opt = {"class_name": opt, "config": {}}
        if isinstance(opt, dict):
            name = str(opt.get("class_name", "")).lower()
            oc = opt.get("config") or {}
            if name in _OPTIMIZER_KEYS:
                words = [f"optimizer {name}"]
                lr = oc.get("learning_rate")
                if isinstance(lr, (int, float)) and not isinstance(lr, bool):
                    words.append(f"lr={_f32(lr)}")
                elif lr is not None:
                    notes.append(f"learning_rate {_short(lr, 120)} (a schedule: see lr_schedule)")
                from nnc.lang.checker import OPTIMIZERS

                defaults = {o.name: o.default for o in OPTIMIZERS[name]}
                for key in _OPTIMIZER_KEYS[name]:
                    v = oc.get(key)
                    if v is None or v == defaults.get(key) or (key == "weight_decay" and not v):
                        continue
                    words.append(f"{key}={'true' if v is True else 'false' if v is False else _f32(v)}")
                for key in ("clipnorm", "clipvalue", "global_clipnorm"):
                    if oc.get(key) is not None:
                        words.append(f"{key}={_f32(oc[key])}")
                for key, default in (("use_ema", False), ("amsgrad", False), ("gradient_accumulation_steps", None),
                                     ("loss_scale_factor", None)):
                    if key not in _OPTIMIZER_KEYS[name] and oc.get(key, default) != default:
                        notes.append(f"optimizer {key}={_short(oc[key])}")
                lines.append("  " + " ".join(words))
            else:
                notes.append(f"optimizer {opt.get('class_name')}")
        metrics = cc.get("metrics") or []
        metrics = metrics if isinstance(metrics, list) else [metrics]
        names = []
        from nnc.lang.metric_rules import METRIC_ALIASES, METRICS

        for m in metrics:
            n = to_snake_case(str(m.get("class_name"))) if isinstance(m, dict) else str(m)
            n = METRIC_ALIASES.get(n, n)
            if n in METRICS and n != "top_k_accuracy" and n not in names:
                names.append(n)
            else:
                notes.append(f"metric {_short(m, 80)}")
        if names:
            lines.append("  metrics " + " ".join(names))
        for key in ("loss_weights", "weighted_metrics"):
            if cc.get(key):
                notes.append(f"{key} {_short(cc[key], 80)}")
    except (AttributeError, TypeError, ValueError, KeyError):
        return [f"# model.compile's settings were not readable: {_short(cc, 200)}"]
    if not lines:
        return [f"# not imported from model.compile: {n}" for n in notes]
    return ["train {", *lines, *(f"  # not imported from model.compile: {n}" for n in notes), "}"]
