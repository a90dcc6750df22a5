"""The meaning of every layer kind, in one place per kind.

A kind declares its options once (type, default, validation, Keras aliases); its shape rule
is a pure function of (options, input shape); its weights are declared as shapes in Keras's
layouts, and the parameter count is derived from them, never written by hand. Backends
(nnc.onnx_export for ONNX, nnc.backend for the NumPy kernels) add one function per kind,
keyed by the same word as the DSL keyword; tests/test_kinds_complete.py fails when a kind
lacks any of its pieces.

Nothing here allocates or imports numpy: counting a 2.5-billion-parameter model is integer
arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod
from typing import Any, ClassVar

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
PADDINGS = ("valid", "same")
REQUIRED = object()


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
    """One option of a kind. `type` is one of: int, float, bool, size1, size2, choice."""

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

    def output_spatial(self, opts: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
        window, strides, padding = self.window(opts), self.strides(opts), opts["padding"]
        spatial = shape[: self.spatial]
        if padding == "valid" and any(w > s for w, s in zip(window, spatial)):
            what = "kernel" if isinstance(self, _Conv) else "pool"
            raise ShapeError(
                f"{self.name} {what} {fmt_shape(window)} does not fit its {fmt_shape(shape)} input",
                "does-not-fit",
                option="kernel" if isinstance(self, _Conv) else "pool",
                help="use a smaller window, remove a pooling layer before it, or padding=same",
            )
        return tuple(window_out(s, w, st, padding) for s, w, st in zip(spatial, window, strides))

    def pads(self, opts: dict, shape: tuple[int, ...]) -> list[tuple[int, int]]:
        """(begin, end) padding per spatial axis, as Keras computes it."""
        if opts["padding"] == "valid":
            return [(0, 0)] * self.spatial
        return [same_pads(s, w, st) for s, w, st in zip(shape, self.window(opts), self.strides(opts))]


class _Conv(_Windowed):
    positional = ("filters",)

    @property
    def options(self) -> tuple[Opt, ...]:  # type: ignore[override]
        size = self._size_type()
        return (
            Opt("filters", "int", minimum=1, doc="number of output channels"),
            Opt("kernel", size, aliases=("kernel_size",), doc="window size"),
            Opt("stride", size, 1, aliases=("strides",), doc="step of the window"),
            Opt("padding", "choice", "valid", choices=PADDINGS),
            Opt("activation", "choice", "linear", choices=ACTIVATIONS),
            Opt("use_bias", "bool", True),
        )

    def window(self, opts):
        return opts["kernel"]

    def strides(self, opts):
        return opts["stride"]

    def output_shape(self, opts, shape):
        return self.output_spatial(opts, shape) + (opts["filters"],)

    def weight_shapes(self, opts, shape):
        w = {"kernel": tuple(opts["kernel"]) + (shape[-1], opts["filters"])}
        if opts["use_bias"]:
            w["bias"] = (opts["filters"],)
        return w

    def macs(self, opts, shape, out):
        return prod(out) * prod(opts["kernel"]) * shape[-1]


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
    options = (
        Opt("units", "int", minimum=1),
        Opt("activation", "choice", "linear", choices=ACTIVATIONS),
        Opt("use_bias", "bool", True),
    )

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


class Relu(_Activation):
    name = "relu"


class Sigmoid(_Activation):
    name = "sigmoid"


class Tanh(_Activation):
    name = "tanh"


class Softmax(_Activation):
    name = "softmax"


# --- sequences --------------------------------------------------------------------------------


class Embedding(Kind):
    name = "embedding"
    keras = "Embedding"
    positional = ("dim",)
    options = (
        Opt("dim", "int", minimum=1, aliases=("output_dim",), doc="size of each token's vector"),
        Opt("vocab", "int", None, minimum=1, aliases=("input_dim",), doc="defaults to the input's vocab"),
    )
    accepts_dtype = "int64"

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
        if len(shape) == 3:
            return "flatten or pool the spatial axes into [steps, features] first"
        return None

    def output_shape(self, opts, shape):
        if opts["return_sequences"]:
            return (shape[0], opts["units"])
        return (opts["units"],)

    def bias_shape(self, opts) -> tuple[int, ...]:
        return (self.gates * opts["units"],)

    def weight_shapes(self, opts, shape):
        u = opts["units"]
        return {
            "kernel": (shape[-1], self.gates * u),
            "recurrent_kernel": (u, self.gates * u),
            "bias": self.bias_shape(opts),
        }

    def macs(self, opts, shape, out):
        u = opts["units"]
        return shape[0] * self.gates * u * (shape[-1] + u)


class Rnn(_Recurrent):
    name = "rnn"
    keras = "SimpleRNN"
    gates = 1
    options = (
        Opt("units", "int", minimum=1),
        Opt("activation", "choice", "tanh", choices=ACTIVATIONS),
        Opt("return_sequences", "bool", False),
    )


class Lstm(_Recurrent):
    name = "lstm"
    keras = "LSTM"
    gates = 4  # Keras order i, f, c, o
    options = (
        Opt("units", "int", minimum=1),
        Opt("return_sequences", "bool", False),
    )


class Gru(_Recurrent):
    name = "gru"
    keras = "GRU"
    gates = 3  # Keras order z, r, h
    options = (
        Opt("units", "int", minimum=1),
        Opt("return_sequences", "bool", False),
        Opt("reset_after", "bool", True, doc="Keras 3's default; false is the original GRU"),
    )

    def bias_shape(self, opts):
        # reset_after keeps separate input and recurrent biases: [2, 3u] (Keras layout)
        return (2, 3 * opts["units"]) if opts["reset_after"] else (3 * opts["units"],)


KINDS: dict[str, Kind] = {
    k.name: k()
    for k in (
        Conv1d, Conv2d, Maxpool1d, Maxpool2d, Avgpool1d, Avgpool2d, Globalmaxpool, Globalavgpool,
        Flatten, Dense, Dropout, Relu, Sigmoid, Tanh, Softmax, Embedding, Rnn, Lstm, Gru,
    )
}

WEIGHT_NAMES = ("kernel", "recurrent_kernel", "bias", "embeddings")


def layer_activation(kind: str, opts: dict) -> str:
    """The activation a layer ends with: its option, or the kind itself for activation layers."""
    if isinstance(KINDS[kind], _Activation):
        return kind
    if kind == "rnn":
        return "linear"  # the rnn's own activation is inside the recurrence
    return opts.get("activation", "linear")

