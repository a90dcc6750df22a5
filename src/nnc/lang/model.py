"""The checked model: what a spec becomes once every shape is known. Backends read only this."""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, Union

from nnc.lang.diagnostics import Diagnostic, Span
from nnc.lang.kinds import KINDS, Kind


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str  # float32 or int64
    shape: tuple[int, ...]  # without the batch
    vocab: int | None = None


@dataclass
class Layer:
    name: str
    kind: str
    options: dict[str, Any]  # canonical names, defaults filled in
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_dtype: str
    weights: dict[str, tuple[int, ...]]  # Keras names and layouts, in Keras's order
    span: Span = field(default=Span(0, 0, 0, 0), repr=False)
    index: int = 0

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]

    @property
    def params(self) -> int:
        return sum(prod(s) for s in self.weights.values())

    @property
    def non_trainable(self) -> tuple[str, ...]:
        """Short names of the weights Keras does not train (batchnorm's moving statistics)."""
        return self.spec.non_trainable(self.options)

    @property
    def trainable_params(self) -> int:
        frozen = self.non_trainable
        return sum(prod(s) for n, s in self.weights.items() if n not in frozen)

    @property
    def non_trainable_params(self) -> int:
        return self.params - self.trainable_params

    @property
    def macs(self) -> int:
        return self.spec.macs(self.options, self.input_shape, self.output_shape)

    @property
    def activation_bytes(self) -> int:
        return 4 * prod(self.output_shape)


MERGES = ("add", "concat", "multiply", "average", "maximum", "minimum", "subtract")
"""Merge blocks, named after Keras's merge layers (Add, Concatenate, Multiply, ...)."""
BLOCKS = ("residual", "repeat") + MERGES


@dataclass
class Block:
    """A step of the model whose inside is one stack or several (LANGUAGE.md, "Blocks").

    - merges (`add`, `concat`, ...): `branches` holds one stack per `branch { }`, each read from
      the block's input (an empty stack is the input itself); their outputs are joined by the
      Keras merge layer the kind is named after (concat on `options["axis"]`, -1 by default).
    - `residual`: stored as `add` would store it: branches == [[], body], so y = x + body(x),
      Keras's Add()([x, body(x)]).
    - `repeat`: `branches` holds one stack, the body expanded `options["times"]` times in
      sequence (its layers already renamed and numbered in reading order).
    """

    name: str  # `stage1: repeat 2 {...}`, or the kind and its place: residual_1, concat_2, ...
    kind: str  # one of BLOCKS
    options: dict[str, Any]
    branches: list[list["Node"]]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    span: Span = field(default=Span(0, 0, 0, 0), repr=False)

    @property
    def is_merge(self) -> bool:
        return self.kind != "repeat"

    @property
    def merge(self) -> str | None:
        """The merge that joins the branches (`add` for residual), None for repeat."""
        return None if self.kind == "repeat" else ("add" if self.kind == "residual" else self.kind)

    def layers(self) -> list[Layer]:
        """Every layer inside, in reading order."""
        return [layer for branch in self.branches for node in branch for layer in node_layers(node)]

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers())


Node = Union[Layer, Block]


def node_layers(node: Node) -> list[Layer]:
    return node.layers() if isinstance(node, Block) else [node]


@dataclass(frozen=True)
class OptimizerConfig:
    name: str  # sgd, rmsprop, adam, adamw, nadam, adagrad (nnc.training.optim.OPTIMIZERS)
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    rho: float = 0.9
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    initial_accumulator_value: float = 0.1  # adagrad
    amsgrad: bool = False  # adam, adamw: Keras's AMSGrad (the update divides by the running maximum of v)
    # gradient clipping, Keras's base-optimizer options (at most one; None: off)
    clipnorm: float | None = None
    clipvalue: float | None = None
    global_clipnorm: float | None = None


@dataclass(frozen=True)
class LRSchedule:
    """`lr_schedule KIND ...` of the train block: Keras's schedules (nnc.training.schedules). The initial
    learning rate is the optimizer's lr= (piecewise: its values are the learning rates)."""

    kind: str  # cosine, exponential, piecewise, reduce_on_plateau
    decay_steps: int = 0  # cosine, exponential
    alpha: float = 0.0  # cosine
    warmup_target: float | None = None  # cosine
    warmup_steps: int = 0  # cosine
    decay_rate: float = 0.0  # exponential
    staircase: bool = False  # exponential
    boundaries: tuple[int, ...] = ()  # piecewise
    values: tuple[float, ...] = ()  # piecewise
    monitor: str = "val_loss"  # reduce_on_plateau
    factor: float = 0.1
    patience: int = 10
    min_delta: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0


@dataclass(frozen=True)
class EarlyStopping:
    monitor: str = "val_loss"
    patience: int = 0
    min_delta: float = 0.0
    restore_best_weights: bool = False


@dataclass(frozen=True)
class TrainConfig:
    loss: str = "sparse_categorical_crossentropy"
    optimizer: OptimizerConfig = OptimizerConfig("rmsprop", 0.001)
    metrics: tuple[str, ...] = ()
    epochs: int = 1
    batch_size: int = 32
    validation_split: float = 0.0
    seed: int = 0
    shuffle: bool = True
    early_stopping: EarlyStopping | None = None
    lr_schedule: LRSchedule | None = None
    # loss and metric options, Keras's defaults: `loss huber delta=`, `loss ... label_smoothing=`,
    # `metrics top_k_accuracy k=`; class_weight: one weight per class id (empty: none)
    huber_delta: float = 1.0
    label_smoothing: float = 0.0
    top_k: int = 5
    class_weight: tuple[float, ...] = ()


@dataclass
class Model:
    name: str
    input: InputSpec
    layers: list[Layer]
    train: TrainConfig | None = None
    source_sha256: str = ""
    path: str | None = None
    body: list[Node] | None = None  # the tree of steps (layers and blocks); None: `layers` is the chain
    source: str = field(default="", repr=False, compare=False)  # the spec's text (ONNX metadata: nnc.source)

    def __post_init__(self):
        if self.body is None:
            self.body = list(self.layers)

    @property
    def output_shape(self) -> tuple[int, ...]:
        # the last step of the body: a block's output (a concat's) need not be its last layer's
        return self.body[-1].output_shape if self.body else self.input.shape

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def trainable_params(self) -> int:
        return sum(layer.trainable_params for layer in self.layers)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    def trainable_weights(self) -> list[str]:
        """Checkpoint names of the weights an optimizer updates (all but batchnorm's moving statistics)."""
        return [f"{layer.name}.{w}" for layer in self.layers for w in layer.weights if w not in layer.non_trainable]

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every checkpoint array name (`LAYER.kernel`, ...) with its Keras shape, in order."""
        return {f"{layer.name}.{w}": s for layer in self.layers for w, s in layer.weights.items()}


@dataclass
class CheckResult:
    path: str
    source: str
    model: Model | None
    diagnostics: list[Diagnostic]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors
