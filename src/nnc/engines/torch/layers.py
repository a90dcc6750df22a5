"""Each layer kind as a layer of standalone.py: the class and its constructor's arguments.

    cls, args = TORCH_EXPORTS[layer.kind](layer)    # ("Conv", {"shapes": ..., "stride": ..., ...})
    getattr(standalone, cls)(**args)                 # what modules.py builds and trains

One place per kind for both uses of standalone.py: nnc.engines.torch.modules builds the engine's
layers from these arguments (without a dense or conv layer's `activation`, which the engine runs
as a step of its own), and nnc.tools.torch_export writes them, as literals, into the file
`nnc export torch` makes. MERGE_FUNCTIONS names the function of standalone.py that joins a merge
block's branches. tests/torch_engine checks that every kind and merge has its entry.

This module imports nnc.lang only (no torch): the arguments are numbers, tuples and strings.
"""

from __future__ import annotations

from nnc.lang.kinds import ACTIVATIONS, layer_activation
from nnc.lang.model import Layer


def param_name(short: str) -> str:
    """A weight's attribute (and state_dict) name in a standalone layer: its Keras short name,
    '.' written '__' (parameter names may not contain dots: attention's `query__kernel`)."""
    return short.replace(".", "__")


def _shapes(layer: Layer) -> dict:
    return {param_name(short): tuple(shape) for short, shape in layer.weights.items()}


def _act(layer: Layer) -> dict:
    act = layer_activation(layer.kind, layer.options)
    return {"activation": act} if act != "linear" else {}


def _windowed(layer: Layer) -> dict:
    spec, o = layer.spec, layer.options
    args = {"stride": tuple(spec.strides(o)), "pads": [tuple(p) for p in spec.pads(o, layer.input_shape)]}
    if any(d != 1 for d in spec.dilations(o)):
        args["dilation"] = tuple(spec.dilations(o))
    return args


def _conv(layer):
    groups = layer.options.get("groups", 1)
    return "Conv", {"shapes": _shapes(layer), **_windowed(layer), **({"groups": groups} if groups != 1 else {}),
                    **_act(layer)}


def _depthwise(layer):
    return "DepthwiseConv", {"shapes": _shapes(layer), **_windowed(layer), **_act(layer)}


def _separable(layer):
    return "SeparableConv", {"shapes": _shapes(layer), **_windowed(layer), **_act(layer)}


def _transpose(layer):
    o = layer.options
    return "ConvTranspose", {"shapes": _shapes(layer), "stride": tuple(o["stride"]),
                             "crops": [tuple(c) for c in layer.spec.crops(o, layer.input_shape)],
                             "size": tuple(layer.output_shape[:-1]), **_act(layer)}


def _pool(cls):
    def export(layer):
        spec, o = layer.spec, layer.options
        args = {"window": tuple(spec.window(o)), "stride": tuple(spec.strides(o)),
                "pads": [tuple(p) for p in spec.pads(o, layer.input_shape)]}
        if cls == "AvgPool":
            args["size"] = tuple(layer.input_shape[:-1])
        return cls, args
    return export


def _plain(cls):
    return lambda layer: (cls, {})


def _weights_only(cls):
    return lambda layer: (cls, {"shapes": _shapes(layer)})


def _recurrent(layer):
    o = layer.options
    args = {"shapes": _shapes(layer), "units": o["units"]}
    defaults = {"return_sequences": False, "bidirectional": False, "merge": "concat", "go_backwards": False,
                "dropout": 0.0, "recurrent_dropout": 0.0, "activation": "tanh", "recurrent_activation": "sigmoid",
                "reset_after": True}
    for name, default in defaults.items():
        if name in o and o[name] != default and not (name == "merge" and not o.get("bidirectional")):
            args[name] = o[name]
    return "Recurrent", {"kind": layer.kind, **args}


def _attention(layer):
    o = layer.options
    args = {"shapes": _shapes(layer), "heads": o["heads"], "key_dim": o["key_dim"],
            "value_dim": o["value_dim"] or o["key_dim"]}
    if o["dropout"]:
        args["dropout"] = float(o["dropout"])
    if o["causal"]:
        args["causal"] = True
    return "Attention", args


def _upsampling(layer):
    size = layer.options["size"]
    args = {"size": (size,) if isinstance(size, int) else tuple(size), "out": tuple(layer.output_shape[:-1])}
    if layer.options.get("interpolation", "nearest") != "nearest":
        args["interpolation"] = layer.options["interpolation"]
    return "Upsampling", args


TORCH_EXPORTS = {
    "conv1d": _conv,
    "conv2d": _conv,
    "maxpool1d": _pool("MaxPool"),
    "maxpool2d": _pool("MaxPool"),
    "avgpool1d": _pool("AvgPool"),
    "avgpool2d": _pool("AvgPool"),
    "globalmaxpool": _plain("GlobalMaxPool"),
    "globalavgpool": _plain("GlobalAvgPool"),
    "flatten": _plain("Flatten"),
    "dense": lambda layer: ("Dense", {"shapes": _shapes(layer), **_act(layer)}),
    "dropout": lambda layer: ("Dropout", {"rate": float(layer.options["rate"])}),
    **{a: (lambda layer: ("Activation", {"name": layer.kind})) for a in ACTIVATIONS if a not in ("leaky_relu", "elu")},
    "leaky_relu": lambda layer: ("LeakyRelu", {"negative_slope": float(layer.options["negative_slope"])}),
    "elu": lambda layer: ("Elu", {"alpha": float(layer.options["alpha"])}),
    "prelu": _weights_only("Prelu"),
    "embedding": _weights_only("Embedding"),
    "rnn": _recurrent,
    "lstm": _recurrent,
    "gru": _recurrent,
    "batchnorm": lambda layer: ("Batchnorm", {"shapes": _shapes(layer), "momentum": float(layer.options["momentum"]),
                                              "epsilon": float(layer.options["epsilon"])}),
    "layernorm": lambda layer: ("Layernorm", {"shapes": _shapes(layer), "epsilon": float(layer.options["epsilon"])}),
    "separable_conv1d": _separable,
    "separable_conv2d": _separable,
    "depthwise_conv1d": _depthwise,
    "depthwise_conv2d": _depthwise,
    "conv1d_transpose": _transpose,
    "conv2d_transpose": _transpose,
    "upsampling1d": _upsampling,
    "upsampling2d": _upsampling,
    "zeropad1d": lambda layer: ("ZeroPad", {"pads": [tuple(p) for p in layer.options["padding"]]}),
    "zeropad2d": lambda layer: ("ZeroPad", {"pads": [tuple(p) for p in layer.options["padding"]]}),
    "cropping1d": lambda layer: ("Cropping", {"crops": [tuple(p) for p in layer.options["cropping"]]}),
    "cropping2d": lambda layer: ("Cropping", {"crops": [tuple(p) for p in layer.options["cropping"]]}),
    "reshape": lambda layer: ("Reshape", {"shape": tuple(layer.output_shape)}),
    "permute": lambda layer: ("Permute", {"axes": tuple(int(a) for a in layer.options["axes"])}),
    "repeat_vector": lambda layer: ("RepeatVector", {"n": int(layer.options["n"])}),
    "spatial_dropout1d": lambda layer: ("SpatialDropout", {"rate": float(layer.options["rate"])}),
    "spatial_dropout2d": lambda layer: ("SpatialDropout", {"rate": float(layer.options["rate"])}),
    "attention": _attention,
    "position_embedding": _weights_only("PositionEmbedding"),
}
"""Each layer kind's standalone layer (nnc.lang.kinds.KINDS): TORCH_EXPORTS[kind](layer) -> (the
class in standalone.py, its constructor's keyword arguments)."""

MERGE_FUNCTIONS = {
    "add": "merge_add",
    "average": "merge_average",
    "subtract": "merge_subtract",
    "multiply": "merge_multiply",
    "maximum": "merge_maximum",
    "minimum": "merge_minimum",
    "concat": "merge_concat",
}
"""The function of standalone.py that joins a merge block's branches (nnc.lang.model.MERGES)."""
