"""The meaning of every layer kind, in one place per kind.

A kind declares its options once (type, default, validation, Keras aliases); its shape rule
is a pure function of (options, input shape); its weights are declared as shapes in Keras's
layouts, and the parameter count is derived from them, never written by hand. Backends
(nnc.onnx.export for ONNX, nnc.engines.numpy for the NumPy kernels) add one function per kind,
keyed by the same word as the DSL keyword; tests/test_kinds_complete.py fails when a kind
lacks any of its pieces.

Nothing here allocates or imports numpy: counting a 2.5-billion-parameter model is integer
arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod
from typing import Any, ClassVar

ACTIVATIONS = (
    "linear", "relu", "sigmoid", "tanh", "softmax",
    "leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "silu", "softplus", "softsign", "hard_sigmoid",
    "relu6", "mish", "log_softmax", "swish",
)
"""Every `activation=` value: the same-named function of keras.activations with its defaults
(leaky_relu's negative_slope 0.2, elu's alpha 1; gelu exact, gelu_tanh = gelu(approximate=True);
hard_sigmoid = relu6(x + 3) / 6, as Keras 3 defines it; swish is silu's other name)."""
PADDINGS = ("valid", "same")
REQUIRED = object()

# Keras's SELU constants (keras.activations.selu)
SELU_ALPHA = 1.67326324
SELU_SCALE = 1.05070098


class ShapeError(Exception):
    """A shape rule refuses its input. `option` names the option to point at, if any."""

    def __init__(self, message: str, code: str = "bad-input-rank", option: str | None = None, help: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.option = option
        self.help = help


@dataclass(frozen=True)
class Opt:
    """One option of a kind. `type` is one of: int, float, bool, size1, size2, choice, and
    shape (a list of positive dims with at most one -1), axes (a 1-based permutation list),
    pad1/pad2 (per-axis (begin, end) pairs: `1`, `1x2` (2-D: (1,1),(2,2)), `[l, r]` or
    `[top, bottom, left, right]`)."""

    name: str
    type: str
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # exclusive
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


class Kind:
    """Base of all kinds. Subclasses set the class attributes and override the rules."""

    name: ClassVar[str]
    keras: ClassVar[str]
    doc: ClassVar[str] = ""
    positional: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[Opt, ...]] = ()
    # dtype that must flow in: "float32" for every kind but embedding
    accepts_dtype: ClassVar[str] = "float32"
    # ranks (without batch) of the input the kind accepts; None means any
    ranks: ClassVar[tuple[int, ...] | None] = None
    # the `activation` option runs after the layer, as a step of its own (dense, convolutions);
    # False where the activation is inside the layer (recurrent cells)
    split_activation: ClassVar[bool] = False

    def option(self, name: str) -> Opt:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)

    def output_dtype(self, opts: dict, dtype: str) -> str:
        return dtype

    def check_input(self, opts: dict, shape: tuple[int, ...]) -> None:
        if self.ranks is not None and len(shape) not in self.ranks:
            want = " or ".join(f"rank {r} ({self.rank_words(r)})" for r in self.ranks)
            raise ShapeError(
                f"{self.name} expects an input of {want}, received shape [{', '.join(map(str, shape))}]",
                "bad-input-rank",
                help=self.rank_help(shape),
            )

    def rank_words(self, rank: int) -> str:
        return {1: "features", 2: "steps, features", 3: "height, width, channels"}.get(rank, f"{rank} axes")

    def rank_help(self, shape: tuple[int, ...]) -> str | None:
        return None

    def output_shape(self, opts: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def weight_shapes(self, opts: dict, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        return {}

    def macs(self, opts: dict, shape: tuple[int, ...], out: tuple[int, ...]) -> int:
        return 0

    def non_trainable(self, opts: dict) -> tuple[str, ...]:
        """Weights Keras keeps out of training (batchnorm's moving statistics)."""
        return ()

    def regularized(self, opts: dict) -> tuple[str, ...]:
        """Weights the `l1=`/`l2=` options penalize (Keras's kernel_regularizer and its kin)."""
        return ()


def activation_opt(default: str = "linear") -> Opt:
    return Opt("activation", "choice", default, choices=ACTIVATIONS)


REGULARIZERS = (
    Opt("l1", "float", 0.0, minimum=0.0, doc="L1 penalty on the kernel, added to the training loss"),
    Opt("l2", "float", 0.0, minimum=0.0, doc="L2 penalty on the kernel, added to the training loss"),
)


# --- convolution and pooling ----------------------------------------------------------------


def window_out(size: int, window: int, stride: int, padding: str) -> int:
    """Keras's output length of a sliding window (compute_conv_output_shape / pooling)."""
    if padding == "same":
        return ceil(size / stride)
    return (size - window) // stride + 1


def same_pads(size: int, window: int, stride: int) -> tuple[int, int]:
    """Keras/TensorFlow `same` padding: the total is split with the odd pixel at the end."""
    out = ceil(size / stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


class _Windowed(Kind):
    spatial: ClassVar[int]  # 1 or 2

    def _size_type(self) -> str:
        return f"size{self.spatial}"

    @property
    def ranks(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.spatial + 1,)

    def rank_help(self, shape: tuple[int, ...]) -> str | None:
        if self.spatial == 2 and len(shape) == 2:
            return (f"an image needs a channels axis (input ...: float32[{shape[0]}, {shape[1]}, 1] for grey-scale); "
                    "for [steps, features] use the 1-D kinds (conv1d, maxpool1d, ...)")
        if self.spatial == 1 and len(shape) == 3:
            return "for [height, width, channels] use the 2-D kind (conv2d, maxpool2d, ...)"
        if len(shape) == 1:
            return "a flat vector has no spatial axes; convolutions and pools need [steps, features] or [height, width, channels]"
        return None

    def window(self, opts: dict) -> tuple[int, ...]:
        raise NotImplementedError

    def strides(self, opts: dict) -> tuple[int, ...]:
        raise NotImplementedError

    def dilations(self, opts: dict) -> tuple[int, ...]:
        return tuple(opts.get("dilation") or (1,) * self.spatial)

    def effective_window(self, opts: dict) -> tuple[int, ...]:
        """The span a dilated window covers: (k - 1) * d + 1."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.window(opts), self.dilations(opts)))

    def output_spatial(self, opts: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
        window, strides, padding = self.effective_window(opts), self.strides(opts), opts["padding"]
        spatial = shape[: self.spatial]
        if padding == "causal":  # left padding of (k - 1) * d: the output keeps the input's length
            return tuple(ceil(s / st) for s, st in zip(spatial, strides))
        if padding == "valid" and any(w > s for w, s in zip(window, spatial)):
            what = "pool" if isinstance(self, _Pool) else "kernel"  # depthwise, separable: kernel too
            raise ShapeError(
                f"{self.name} {what} {fmt_shape(window)} does not fit its {fmt_shape(shape)} input",
                "does-not-fit",
                option=what,
                help="use a smaller window, remove a pooling layer before it, or padding=same",
            )
        return tuple(window_out(s, w, st, padding) for s, w, st in zip(spatial, window, strides))

    def pads(self, opts: dict, shape: tuple[int, ...]) -> list[tuple[int, int]]:
        """(begin, end) padding per spatial axis, as Keras computes it (dilated windows included)."""
        if opts["padding"] == "valid":
            return [(0, 0)] * self.spatial
        if opts["padding"] == "causal":
            return [(w - 1, 0) for w in self.effective_window(opts)]
        return [same_pads(s, w, st) for s, w, st in zip(shape, self.effective_window(opts), self.strides(opts))]

    def check_dilation(self, opts: dict) -> None:
        if any(d > 1 for d in self.dilations(opts)) and any(st > 1 for st in self.strides(opts)):
            raise ShapeError(f"{self.name} cannot have both stride and dilation above 1 (Keras refuses it too)",
                             "bad-value", option="dilation", help="use stride=1 with a dilation, or dilation=1")


class _Conv(_Windowed):
    positional = ("filters",)
    split_activation = True

    @property
    def options(self) -> tuple[Opt, ...]:  # type: ignore[override]
        size = self._size_type()
        paddings = PADDINGS + (("causal",) if self.spatial == 1 else ())
        return (
            Opt("filters", "int", minimum=1, doc="number of output channels"),
            Opt("kernel", size, aliases=("kernel_size",), doc="window size"),
            Opt("stride", size, 1, aliases=("strides",), doc="step of the window"),
            Opt("padding", "choice", "valid", choices=paddings),
            activation_opt(),
            Opt("use_bias", "bool", True),
            Opt("dilation", size, 1, aliases=("dilation_rate",), doc="spacing of the window's taps"),
            Opt("groups", "int", 1, minimum=1, doc="input and output channels split into this many groups"),
        ) + REGULARIZERS

    def window(self, opts):
        return opts["kernel"]

    def strides(self, opts):
        return opts["stride"]

    def output_shape(self, opts, shape):
        self.check_dilation(opts)
        groups = opts.get("groups", 1)
        if groups > 1:
            if opts["filters"] % groups:
                raise ShapeError(f"{self.name} filters={opts['filters']} is not divisible by groups={groups}",
                                 "bad-value", option="groups", help="filters and input channels must both be multiples of groups")
            if shape[-1] % groups:
                raise ShapeError(f"{self.name} input has {shape[-1]} channels, not divisible by groups={groups}",
                                 "bad-value", option="groups", help="filters and input channels must both be multiples of groups")
        return self.output_spatial(opts, shape) + (opts["filters"],)

    def weight_shapes(self, opts, shape):
        w = {"kernel": tuple(opts["kernel"]) + (shape[-1] // opts.get("groups", 1), opts["filters"])}
        if opts["use_bias"]:
            w["bias"] = (opts["filters"],)
        return w

    def macs(self, opts, shape, out):
        return prod(out) * prod(opts["kernel"]) * shape[-1] // opts.get("groups", 1)

    def regularized(self, opts):
        return ("kernel",)


class Conv1d(_Conv):
    name = "conv1d"
    keras = "Conv1D"
    spatial = 1
    doc = "1-D convolution over [steps, channels]."


class Conv2d(_Conv):
    name = "conv2d"
    keras = "Conv2D"
    spatial = 2
    doc = "2-D convolution over [height, width, channels]."


class _Pool(_Windowed):
    positional = ("pool",)
    reduce: ClassVar[str]  # "max" or "avg"

    @property
    def options(self) -> tuple[Opt, ...]:  # type: ignore[override]
        size = self._size_type()
        return (
            Opt("pool", size, aliases=("pool_size",), doc="window size"),
            Opt("stride", size, None, aliases=("strides",), doc="defaults to the pool size"),
            Opt("padding", "choice", "valid", choices=PADDINGS),
        )

    def window(self, opts):
        return opts["pool"]

    def strides(self, opts):
        return opts["stride"] if opts["stride"] is not None else opts["pool"]

    def output_shape(self, opts, shape):
        return self.output_spatial(opts, shape) + (shape[-1],)


class Maxpool1d(_Pool):
    name = "maxpool1d"
    keras = "MaxPooling1D"
    spatial = 1
    reduce = "max"


class Maxpool2d(_Pool):
    name = "maxpool2d"
    keras = "MaxPooling2D"
    spatial = 2
    reduce = "max"


class Avgpool1d(_Pool):
    name = "avgpool1d"
    keras = "AveragePooling1D"
    spatial = 1
    reduce = "avg"


class Avgpool2d(_Pool):
    name = "avgpool2d"
    keras = "AveragePooling2D"
    spatial = 2
    reduce = "avg"


class _GlobalPool(Kind):
    ranks = (2, 3)
    reduce: ClassVar[str]

    def output_shape(self, opts, shape):
        return (shape[-1],)


class Globalmaxpool(_GlobalPool):
    name = "globalmaxpool"
    keras = "GlobalMaxPooling1D/2D"
    reduce = "max"


class Globalavgpool(_GlobalPool):
    name = "globalavgpool"
    keras = "GlobalAveragePooling1D/2D"
    reduce = "avg"


# --- dense stack ------------------------------------------------------------------------------


class Flatten(Kind):
    name = "flatten"
    keras = "Flatten"

    def output_shape(self, opts, shape):
        return (prod(shape),)


class Dense(Kind):
    name = "dense"
    keras = "Dense"
    positional = ("units",)
    split_activation = True
    options = (
        Opt("units", "int", minimum=1),
        activation_opt(),
        Opt("use_bias", "bool", True),
    ) + REGULARIZERS

    def regularized(self, opts):
        return ("kernel",)

    def output_shape(self, opts, shape):
        return shape[:-1] + (opts["units"],)

    def weight_shapes(self, opts, shape):
        w = {"kernel": (shape[-1], opts["units"])}
        if opts["use_bias"]:
            w["bias"] = (opts["units"],)
        return w

    def macs(self, opts, shape, out):
        return prod(out) * shape[-1]


class Dropout(Kind):
    name = "dropout"
    keras = "Dropout"
    positional = ("rate",)
    options = (Opt("rate", "float", minimum=0.0, maximum=1.0, doc="fraction of units zeroed in training"),)


class _Activation(Kind):
    keras = "Activation"

    @property
    def activation(self) -> str:
        return self.name


def _activation_kind(act: str) -> type:
    return type(act.capitalize().replace("_", ""), (_Activation,), {"name": act, "__module__": __name__,
                                                                       "doc": f"keras.activations.{act} as a layer"})


class LeakyRelu(_Activation):
    name = "leaky_relu"
    keras = "LeakyReLU"
    options = (Opt("negative_slope", "float", 0.3, minimum=0.0, aliases=("alpha",),
                   doc="slope below zero (the LeakyReLU layer's default, 0.3)"),)


class Elu(_Activation):
    name = "elu"
    keras = "ELU"
    options = (Opt("alpha", "float", 1.0, minimum=0.0, doc="scale of the negative part"),)


class Prelu(_Activation):
    name = "prelu"
    keras = "PReLU"
    doc = "leaky relu with a learned slope per input element (alpha starts at 0)"

    def weight_shapes(self, opts, shape):
        return {"alpha": tuple(shape)}

    def macs(self, opts, shape, out):
        return prod(shape)


ACTIVATION_LAYERS = tuple(_activation_kind(a) for a in ACTIVATIONS if a not in ("leaky_relu", "elu"))


# --- sequences --------------------------------------------------------------------------------


class Embedding(Kind):
    name = "embedding"
    keras = "Embedding"
    positional = ("dim",)
    options = (
        Opt("dim", "int", minimum=1, aliases=("output_dim",), doc="size of each token's vector"),
        Opt("vocab", "int", None, minimum=1, aliases=("input_dim",), doc="defaults to the input's vocab"),
    ) + REGULARIZERS
    accepts_dtype = "int64"

    def regularized(self, opts):
        return ("embeddings",)

    def output_dtype(self, opts, dtype):
        return "float32"

    def output_shape(self, opts, shape):
        return shape + (opts["dim"],)

    def weight_shapes(self, opts, shape):
        return {"embeddings": (opts["vocab"], opts["dim"])}


class _Recurrent(Kind):
    ranks = (2,)
    positional = ("units",)
    gates: ClassVar[int]

    def rank_help(self, shape):
        if len(shape) == 1:
            return "a recurrent layer reads [steps, features]: put an embedding before it, or give the input a feature axis"
        if len(shape) == 3:  # an image: its rows as steps (a flatten would leave no steps to read)
            h, w, c = shape
            rows = f"[{h}, {w}]" if c == 1 else f"[{h}, {w * c}]"
            reshape = f"reshape {rows} before {self.name}" if c == 1 else f"reshape [-1, {c}] before {self.name} ({h * w} steps of {c})"
            return (f"read the image row by row: declare the input as [steps, features] ({rows}: {h} rows of "
                    f"{w * c} values), or put {reshape}")
        return None

    def output_units(self, opts) -> int:
        u = opts["units"]
        return 2 * u if opts.get("bidirectional") and opts.get("merge", "concat") == "concat" else u

    def output_shape(self, opts, shape):
        if opts.get("bidirectional") and opts.get("go_backwards"):
            # Keras's Bidirectional makes its backward copy with go_backwards=True, and refuses a
            # layer that reads backwards already (both copies would)
            raise ShapeError(f"a bidirectional {self.name} reads the sequence both ways already; Keras's Bidirectional "
                             "refuses go_backwards=true", "bad-value", option="go_backwards",
                             help="leave go_backwards out, or use bidirectional=false")
        if not opts.get("bidirectional") and opts.get("merge", "concat") != "concat":
            # merge joins the two directions of a bidirectional layer; alone it would do nothing
            raise ShapeError(f"merge={opts['merge']} joins the two directions of a bidirectional {self.name}, but this "
                             f"{self.name} reads one direction", "bad-value", option="merge",
                             help=f"add bidirectional=true, or leave merge out")
        if opts["return_sequences"]:
            return (shape[0], self.output_units(opts))
        return (self.output_units(opts),)

    def bias_shape(self, opts) -> tuple[int, ...]:
        return (self.gates * opts["units"],)

    def directions(self, opts) -> tuple[str, ...]:
        """Weight-name prefixes: "" for one direction, "forward."/"backward." for bidirectional
        (Keras's Bidirectional's forward_lstm/lstm_cell level written `forward`)."""
        return ("forward.", "backward.") if opts.get("bidirectional") else ("",)

    def weight_shapes(self, opts, shape):
        u = opts["units"]
        w = {}
        for d in self.directions(opts):
            w[d + "kernel"] = (shape[-1], self.gates * u)
            w[d + "recurrent_kernel"] = (u, self.gates * u)
            w[d + "bias"] = self.bias_shape(opts)
        return w

    def macs(self, opts, shape, out):
        u = opts["units"]
        return len(self.directions(opts)) * shape[0] * self.gates * u * (shape[-1] + u)

    def regularized(self, opts):
        return tuple(d + "kernel" for d in self.directions(opts))


def recurrent_options(activation: bool) -> tuple[Opt, ...]:
    """Options every recurrent kind shares (LANGUAGE.md, "More kinds and options")."""
    return (
        Opt("return_sequences", "bool", False),
        Opt("bidirectional", "bool", False, doc="Keras's Bidirectional wrapper: a forward and a backward layer"),
        Opt("merge", "choice", "concat", choices=("concat", "sum", "mul", "ave"), aliases=("merge_mode",),
            doc="how a bidirectional layer joins its two directions"),
        Opt("dropout", "float", 0.0, minimum=0.0, maximum=1.0, doc="dropout on the inputs, in training"),
        Opt("recurrent_dropout", "float", 0.0, minimum=0.0, maximum=1.0,
            doc="dropout on the recurrent state, in training"),
        Opt("go_backwards", "bool", False, doc="read the sequence from its end"),
    ) + ((activation_opt("tanh"), Opt("recurrent_activation", "choice", "sigmoid", choices=ACTIVATIONS)) if activation else ()) + REGULARIZERS


class Rnn(_Recurrent):
    name = "rnn"
    keras = "SimpleRNN"
    gates = 1
    options = (
        Opt("units", "int", minimum=1),
        activation_opt("tanh"),
    ) + recurrent_options(activation=False)


class Lstm(_Recurrent):
    name = "lstm"
    keras = "LSTM"
    gates = 4  # Keras order i, f, c, o
    options = (Opt("units", "int", minimum=1),) + recurrent_options(activation=True)


class Gru(_Recurrent):
    name = "gru"
    keras = "GRU"
    gates = 3  # Keras order z, r, h
    options = (
        Opt("units", "int", minimum=1),
        Opt("reset_after", "bool", True, doc="Keras 3's default; false is the original GRU"),
    ) + recurrent_options(activation=True)

    def bias_shape(self, opts):
        # reset_after keeps separate input and recurrent biases: [2, 3u] (Keras layout)
        return (2, 3 * opts["units"]) if opts["reset_after"] else (3 * opts["units"],)


# --- normalization ----------------------------------------------------------------------------


class Batchnorm(Kind):
    name = "batchnorm"
    keras = "BatchNormalization"
    doc = "normalizes each channel (the last axis) by the batch's statistics in training, the moving ones in inference"
    options = (
        Opt("momentum", "float", 0.99, minimum=0.0, maximum=1.0, doc="moving statistics: m <- momentum m + (1 - momentum) batch"),
        Opt("epsilon", "float", 0.001, minimum=0.0, doc="added to the variance"),
        Opt("center", "bool", True, doc="learn an offset beta"),
        Opt("scale", "bool", True, doc="learn a scale gamma"),
    )

    def weight_shapes(self, opts, shape):
        c = (shape[-1],)
        w = {}
        if opts["scale"]:
            w["gamma"] = c
        if opts["center"]:
            w["beta"] = c
        w["moving_mean"] = c
        w["moving_variance"] = c
        return w

    def non_trainable(self, opts):
        return ("moving_mean", "moving_variance")

    def macs(self, opts, shape, out):
        return prod(shape)


class Layernorm(Kind):
    name = "layernorm"
    keras = "LayerNormalization"
    doc = "normalizes each sample over its last axis"
    options = (
        Opt("epsilon", "float", 0.001, minimum=0.0, doc="added to the variance"),
        Opt("center", "bool", True, doc="learn an offset beta"),
        Opt("scale", "bool", True, doc="learn a scale gamma"),
    )

    def weight_shapes(self, opts, shape):
        w = {}
        if opts["scale"]:
            w["gamma"] = (shape[-1],)
        if opts["center"]:
            w["beta"] = (shape[-1],)
        return w

    def macs(self, opts, shape, out):
        return prod(shape)


# --- more convolutions ------------------------------------------------------------------------


def _depth_options(size: str, positional_filters: bool) -> tuple[Opt, ...]:
    return (
        Opt("kernel", size, aliases=("kernel_size",), doc="window size"),
        Opt("stride", size, 1, aliases=("strides",), doc="step of the window"),
        Opt("padding", "choice", "valid", choices=PADDINGS),
        activation_opt(),
        Opt("use_bias", "bool", True),
        Opt("depth_multiplier", "int", 1, minimum=1, doc="output channels per input channel of the depthwise step"),
        Opt("dilation", size, 1, aliases=("dilation_rate",), doc="spacing of the window's taps"),
    ) + REGULARIZERS


class _Separable(_Windowed):
    positional = ("filters",)
    split_activation = True

    @property
    def options(self) -> tuple[Opt, ...]:  # type: ignore[override]
        return (Opt("filters", "int", minimum=1, doc="number of output channels"),) + _depth_options(
            self._size_type(), True)

    def window(self, opts):
        return opts["kernel"]

    def strides(self, opts):
        return opts["stride"]

    def output_shape(self, opts, shape):
        # unlike Conv1D/2D, Keras's SeparableConv and DepthwiseConv accept stride and dilation both above 1
        return self.output_spatial(opts, shape) + (opts["filters"],)

    def weight_shapes(self, opts, shape):
        mid = shape[-1] * opts["depth_multiplier"]
        w = {
            "depthwise_kernel": tuple(opts["kernel"]) + (shape[-1], opts["depth_multiplier"]),
            "pointwise_kernel": (1,) * self.spatial + (mid, opts["filters"]),
        }
        if opts["use_bias"]:
            w["bias"] = (opts["filters"],)
        return w

    def macs(self, opts, shape, out):
        mid = shape[-1] * opts["depth_multiplier"]
        return prod(out[:-1]) * (prod(opts["kernel"]) * mid + mid * opts["filters"])

    def regularized(self, opts):
        return ("depthwise_kernel", "pointwise_kernel")


class SeparableConv1d(_Separable):
    name = "separable_conv1d"
    keras = "SeparableConv1D"
    spatial = 1
    doc = "depthwise 1-D convolution then a pointwise (1x1) one"


class SeparableConv2d(_Separable):
    name = "separable_conv2d"
    keras = "SeparableConv2D"
    spatial = 2
    doc = "depthwise 2-D convolution then a pointwise (1x1) one"


class _Depthwise(_Windowed):
    positional = ("kernel",)
    split_activation = True

    @property
    def options(self) -> tuple[Opt, ...]:  # type: ignore[override]
        return _depth_options(self._size_type(), False)

    def window(self, opts):
        return opts["kernel"]

    def strides(self, opts):
        return opts["stride"]

    def output_shape(self, opts, shape):
        # Keras's DepthwiseConv accepts stride and dilation both above 1 (its Conv1D/2D do not)
        return self.output_spatial(opts, shape) + (shape[-1] * opts["depth_multiplier"],)

    def weight_shapes(self, opts, shape):
        w = {"kernel": tuple(opts["kernel"]) + (shape[-1], opts["depth_multiplier"])}
        if opts["use_bias"]:
            w["bias"] = (shape[-1] * opts["depth_multiplier"],)
        return w

    def macs(self, opts, shape, out):
        return prod(out) * prod(opts["kernel"])

    def regularized(self, opts):
        return ("kernel",)


class DepthwiseConv1d(_Depthwise):
    name = "depthwise_conv1d"
    keras = "DepthwiseConv1D"
    spatial = 1
    doc = "one 1-D filter per input channel (times depth_multiplier); output channel c * depth_multiplier + m"


class DepthwiseConv2d(_Depthwise):
    name = "depthwise_conv2d"
    keras = "DepthwiseConv2D"
    spatial = 2
    doc = "one 2-D filter per input channel (times depth_multiplier); output channel c * depth_multiplier + m"


def transpose_out(size: int, kernel: int, stride: int, padding: str) -> int:
    """Keras's deconv_output_length (no output_padding, dilation 1)."""
    if padding == "same":
        return size * stride
    return size * stride + max(kernel - stride, 0)


def transpose_pads(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """How many rows the full transposed convolution ((size - 1) * stride + kernel long) loses at
    its begin and end to give Keras's length: with `same`, total = kernel - stride (when
    positive), the begin getting the smaller half, as TensorFlow's conv2d_transpose does."""
    full = (size - 1) * stride + kernel
    total = full - transpose_out(size, kernel, stride, padding)
    if total <= 0:
        return (0, 0)
    return (total // 2, total - total // 2)


class _ConvTranspose(_Windowed):
    positional = ("filters",)
    split_activation = True

    @property
    def options(self) -> tuple[Opt, ...]:  # type: ignore[override]
        size = self._size_type()
        return (
            Opt("filters", "int", minimum=1, doc="number of output channels"),
            Opt("kernel", size, aliases=("kernel_size",), doc="window size"),
            Opt("stride", size, 1, aliases=("strides",), doc="upsampling factor"),
            Opt("padding", "choice", "valid", choices=PADDINGS),
            activation_opt(),
            Opt("use_bias", "bool", True),
        ) + REGULARIZERS

    def window(self, opts):
        return opts["kernel"]

    def strides(self, opts):
        return opts["stride"]

    def output_shape(self, opts, shape):
        spatial = tuple(transpose_out(s, k, st, opts["padding"])
                        for s, k, st in zip(shape[: self.spatial], opts["kernel"], opts["stride"]))
        return spatial + (opts["filters"],)

    def crops(self, opts, shape) -> list[tuple[int, int]]:
        """(begin, end) rows cut from the full transposed convolution, per spatial axis."""
        return [transpose_pads(s, k, st, opts["padding"])
                for s, k, st in zip(shape[: self.spatial], opts["kernel"], opts["stride"])]

    def weight_shapes(self, opts, shape):
        w = {"kernel": tuple(opts["kernel"]) + (opts["filters"], shape[-1])}
        if opts["use_bias"]:
            w["bias"] = (opts["filters"],)
        return w

    def macs(self, opts, shape, out):
        return prod(shape) * prod(opts["kernel"]) * opts["filters"]

    def regularized(self, opts):
        return ("kernel",)


class Conv1dTranspose(_ConvTranspose):
    name = "conv1d_transpose"
    keras = "Conv1DTranspose"
    spatial = 1
    doc = "transposed 1-D convolution (learned upsampling)"


class Conv2dTranspose(_ConvTranspose):
    name = "conv2d_transpose"
    keras = "Conv2DTranspose"
    spatial = 2
    doc = "transposed 2-D convolution (learned upsampling)"


# --- resizing, padding, cropping ------------------------------------------------------------


class _Spatial(Kind):
    """Kinds over the spatial axes of [steps, channels] or [height, width, channels]."""

    spatial: ClassVar[int]

    @property
    def ranks(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.spatial + 1,)

    def rank_help(self, shape):
        return _Windowed.rank_help(self, shape)  # type: ignore[arg-type]


class Upsampling1d(_Spatial):
    name = "upsampling1d"
    keras = "UpSampling1D"
    spatial = 1
    positional = ("size",)
    options = (Opt("size", "int", 2, minimum=1, doc="each step is repeated this many times"),)

    def output_shape(self, opts, shape):
        return (shape[0] * opts["size"], shape[1])


class Upsampling2d(_Spatial):
    name = "upsampling2d"
    keras = "UpSampling2D"
    spatial = 2
    positional = ("size",)
    options = (
        Opt("size", "size2", 2, doc="rows and columns are repeated (or interpolated) this many times"),
        Opt("interpolation", "choice", "nearest", choices=("nearest", "bilinear")),
    )

    def output_shape(self, opts, shape):
        return (shape[0] * opts["size"][0], shape[1] * opts["size"][1], shape[2])

    def macs(self, opts, shape, out):
        return prod(out) * (4 if opts["interpolation"] == "bilinear" else 0)


class _PadCrop(_Spatial):
    sign: ClassVar[int]  # +1 pads, -1 crops

    def output_shape(self, opts, shape):
        amounts = opts[self.positional[0]]
        out = tuple(s + self.sign * (b + e) for s, (b, e) in zip(shape[: self.spatial], amounts))
        if any(o < 1 for o in out):
            raise ShapeError(f"{self.name} {self.positional[0]} {amounts} leaves nothing of the "
                             f"{fmt_shape(shape)} input", "does-not-fit", option=self.positional[0],
                             help="crop less than each axis holds")
        return out + (shape[-1],)


class Zeropad1d(_PadCrop):
    name = "zeropad1d"
    keras = "ZeroPadding1D"
    spatial = 1
    sign = 1
    positional = ("padding",)
    options = (Opt("padding", "pad1", 1, doc="zeros added at the begin and end: 1 or [begin, end]"),)


class Zeropad2d(_PadCrop):
    name = "zeropad2d"
    keras = "ZeroPadding2D"
    spatial = 2
    sign = 1
    positional = ("padding",)
    options = (Opt("padding", "pad2", 1, doc="zeros added: 1, 1x2 (rows x columns), or [top, bottom, left, right]"),)


class Cropping1d(_PadCrop):
    name = "cropping1d"
    keras = "Cropping1D"
    spatial = 1
    sign = -1
    positional = ("cropping",)
    options = (Opt("cropping", "pad1", 1, doc="steps cut at the begin and end: 1 or [begin, end]"),)


class Cropping2d(_PadCrop):
    name = "cropping2d"
    keras = "Cropping2D"
    spatial = 2
    sign = -1
    positional = ("cropping",)
    options = (Opt("cropping", "pad2", 0, doc="cut: 1, 1x2 (rows x columns), or [top, bottom, left, right]"),)


# --- reshaping --------------------------------------------------------------------------------


class Reshape(Kind):
    name = "reshape"
    keras = "Reshape"
    positional = ("shape",)
    options = (Opt("shape", "shape", aliases=("target_shape",), doc="the new shape without the batch, one -1 allowed"),)

    def output_shape(self, opts, shape):
        target = opts["shape"]
        total = prod(shape)
        known = prod(d for d in target if d != -1)
        if -1 in target:
            if total % known:
                raise ShapeError(f"reshape cannot fit {total:,} values ({fmt_shape(shape)}) into "
                                 f"[{', '.join(map(str, target))}]: {total:,} is not a multiple of {known:,}",
                                 "does-not-fit", option="shape")
            return tuple(total // known if d == -1 else d for d in target)
        if known != total:
            raise ShapeError(f"reshape to [{', '.join(map(str, target))}] holds {known:,} values, but its input "
                             f"{fmt_shape(shape)} has {total:,}", "does-not-fit", option="shape",
                             help="the product of the dims must stay the same; one dim may be -1 to be inferred")
        return tuple(target)


class Permute(Kind):
    name = "permute"
    keras = "Permute"
    positional = ("axes",)
    options = (Opt("axes", "axes", aliases=("dims",), doc="the input axes in their new order, 1-based: [2, 1]"),)

    def output_shape(self, opts, shape):
        axes = opts["axes"]
        if sorted(axes) != list(range(1, len(shape) + 1)):
            raise ShapeError(f"permute axes [{', '.join(map(str, axes))}] are not an order of the input's "
                             f"{len(shape)} axes 1..{len(shape)}", "bad-value", option="axes",
                             help=f"for a [{', '.join(map(str, shape))}] input use a list of 1..{len(shape)}, each once")
        return tuple(shape[a - 1] for a in axes)


class RepeatVector(Kind):
    name = "repeat_vector"
    keras = "RepeatVector"
    positional = ("n",)
    ranks = (1,)
    options = (Opt("n", "int", minimum=1, doc="how many times the vector is repeated"),)

    def output_shape(self, opts, shape):
        return (opts["n"], shape[0])


class _SpatialDropout(_Spatial):
    positional = ("rate",)
    options = (Opt("rate", "float", minimum=0.0, maximum=1.0, doc="fraction of channels zeroed in training"),)


class SpatialDropout1d(_SpatialDropout):
    name = "spatial_dropout1d"
    keras = "SpatialDropout1D"
    spatial = 1


class SpatialDropout2d(_SpatialDropout):
    name = "spatial_dropout2d"
    keras = "SpatialDropout2D"
    spatial = 2


# --- attention --------------------------------------------------------------------------------


class Attention(Kind):
    name = "attention"
    keras = "MultiHeadAttention"
    doc = "multi-head self-attention over the steps: mha(x, x)"
    ranks = (2,)
    options = (
        Opt("heads", "int", minimum=1, aliases=("num_heads",), doc="number of attention heads"),
        Opt("key_dim", "int", minimum=1, doc="size of each head's queries and keys"),
        Opt("value_dim", "int", None, minimum=1, doc="size of each head's values (defaults to key_dim)"),
        Opt("dropout", "float", 0.0, minimum=0.0, maximum=1.0, doc="dropout on the attention weights, in training"),
        Opt("causal", "bool", False, aliases=("use_causal_mask",), doc="each step attends only to itself and earlier steps"),
        Opt("use_bias", "bool", True),
    ) + REGULARIZERS

    def rank_help(self, shape):
        if len(shape) == 1:
            return "attention reads [steps, features]: put an embedding or a reshape before it"
        if len(shape) == 3:
            return (f"reshape the image to [steps, features] first: reshape [-1, {shape[-1]}] makes its "
                    f"{shape[0]}x{shape[1]} positions {shape[0] * shape[1]} steps")
        return None

    def value_dim(self, opts) -> int:
        return opts["value_dim"] or opts["key_dim"]

    def weight_shapes(self, opts, shape):
        f, h, k, v = shape[-1], opts["heads"], opts["key_dim"], self.value_dim(opts)
        w: dict[str, tuple[int, ...]] = {}
        for part, dim in (("query", k), ("key", k), ("value", v)):
            w[f"{part}.kernel"] = (f, h, dim)
            if opts["use_bias"]:
                w[f"{part}.bias"] = (h, dim)
        w["attention_output.kernel"] = (h, v, f)
        if opts["use_bias"]:
            w["attention_output.bias"] = (f,)
        return w

    def macs(self, opts, shape, out):
        t, f, h, k, v = shape[0], shape[-1], opts["heads"], opts["key_dim"], self.value_dim(opts)
        return t * f * h * (2 * k + 2 * v) + t * t * h * (k + v)

    def regularized(self, opts):
        return ("query.kernel", "key.kernel", "value.kernel", "attention_output.kernel")


class PositionEmbedding(Kind):
    name = "position_embedding"
    keras = "PositionEmbedding"
    doc = "adds a learned vector per position (a [max_length, features] table) to each step"
    ranks = (2,)
    options = (Opt("max_length", "int", None, minimum=1, aliases=("sequence_length",),
                   doc="rows of the table (defaults to the input's steps)"),)

    def check_input(self, opts, shape):
        super().check_input(opts, shape)
        if opts["max_length"] is not None and opts["max_length"] < shape[0]:
            raise ShapeError(f"position_embedding max_length={opts['max_length']} is shorter than the input's "
                             f"{shape[0]} steps", "does-not-fit", option="max_length",
                             help=f"use max_length={shape[0]} or more, or leave it out")

    def weight_shapes(self, opts, shape):
        return {"embeddings": (opts["max_length"] or shape[0], shape[-1])}

    def macs(self, opts, shape, out):
        return prod(shape)


KINDS: dict[str, Kind] = {
    k.name: k()
    for k in (
        Conv1d, Conv2d, Maxpool1d, Maxpool2d, Avgpool1d, Avgpool2d, Globalmaxpool, Globalavgpool,
        Flatten, Dense, Dropout, *ACTIVATION_LAYERS, LeakyRelu, Elu, Prelu, Embedding, Rnn, Lstm, Gru,
        Batchnorm, Layernorm, SeparableConv1d, SeparableConv2d, DepthwiseConv1d, DepthwiseConv2d,
        Conv1dTranspose, Conv2dTranspose, Upsampling1d, Upsampling2d, Zeropad1d, Zeropad2d, Cropping1d, Cropping2d,
        Reshape, Permute, RepeatVector, SpatialDropout1d, SpatialDropout2d, Attention, PositionEmbedding,
    )
}

RECURRENT_KINDS = ("rnn", "lstm", "gru")
DROPOUT_KINDS = ("dropout", "spatial_dropout1d", "spatial_dropout2d")


def is_activation_kind(kind: str) -> bool:
    return isinstance(KINDS.get(kind), _Activation)


def layer_activation(kind: str, opts: dict) -> str:
    """The activation a layer ends with: its option, or the kind itself for activation layers."""
    if isinstance(KINDS[kind], _Activation):
        return kind
    if kind in RECURRENT_KINDS:
        return "linear"  # a recurrent layer's activation is inside the recurrence
    return opts.get("activation", "linear")

