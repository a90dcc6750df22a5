"""The JSON that nnc writes, as pydantic models: the published contracts (`nnc schema NAME`).

| name            | what                                                    | written by                        |
|-----------------|---------------------------------------------------------|-----------------------------------|
| `check`         | `nnc check --format json`: a list of diagnostics        | nnc.tools.report                        |
| `summary`       | `nnc summary --format json`                             | nnc.tools.summary.to_json               |
| `history`       | a run's `history.json`: metric name -> one number/epoch | nnc.training.loop.Trainer._save           |
| `state`         | the `meta` JSON inside a run's `state.npz`              | nnc.training.loop.Trainer._meta           |
| `onnx-metadata` | the `nnc.*` metadata_props of a compiled ONNX model     | nnc.onnx.export.build             |
| `eval`          | `nnc eval --format json`: the loss and the metrics      | nnc.commands.eval                 |

Each carries a `schema_version` (the ONNX metadata: `nnc.schema_version`, a string, as every
metadata_props value is); within one version fields are only ever added, so a reader keys on it
to know what it may rely on (the published schemas admit unlisted fields). The check report
stays a list (as it always was): each diagnostic carries the version. history.json stays Keras's History.history, plus the one integer key
`schema_version`: a reader that walks every key skips the non-list one.

The writers do not import this module: they write with the standard library's json, so that
`nnc check` never pays for pydantic. It is imported by `nnc schema` and by the tests, which
validate real outputs against `json_schema(NAME)` with jsonschema.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, Json, RootModel

from nnc.lang.diagnostics import CODES
from nnc.lang.model import TrainConfig
from nnc.onnx.export import METADATA_SCHEMA_VERSION
from nnc.tools.report import CHECK_SCHEMA_VERSION
from nnc.tools.summary import SUMMARY_SCHEMA_VERSION
from nnc.training.loop import EVAL_SCHEMA_VERSION, HISTORY_SCHEMA_VERSION, STATE_VERSION
from nnc.training.schedules import Plateau

Shape = list[int]
"""A tensor's shape without the batch axis."""
DiagnosticCode = Literal[tuple(CODES)]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- nnc check --format json -------------------------------------------------------------------


class Diagnostic(_Strict):
    """One diagnostic of `nnc check --format json`. Lines and columns count from 1; the end
    column is one past the last character."""

    schema_version: Literal[CHECK_SCHEMA_VERSION]  # type: ignore[valid-type]
    file: str
    line: int = Field(ge=0)
    column: int = Field(ge=0)
    end_line: int = Field(ge=0)
    end_column: int = Field(ge=0)
    severity: Literal["error", "warning"]
    code: DiagnosticCode = Field(description="a stable code (nnc.lang.diagnostics.CODES): tools key on it")
    message: str
    help: Optional[str]


class CheckReport(RootModel[list[Diagnostic]]):
    """`nnc check --format json`: every diagnostic of every file, in order (an empty list: no problems)."""


# --- nnc summary --format json -----------------------------------------------------------------


class SummaryInput(_Strict):
    name: str
    dtype: Literal["float32", "int64"]
    shape: Shape
    vocab: Optional[int]


class SummaryLayer(_Strict):
    name: str
    kind: str
    output_shape: Shape
    params: int = Field(ge=0)
    trainable_params: int = Field(ge=0)
    macs: int = Field(ge=0)
    activation_bytes: int = Field(ge=0, description="the layer's output per sample, in float32")
    weights: dict[str, Shape] = Field(description="checkpoint arrays (Keras names and layouts) and their shapes")


class SummaryStep(_Strict):
    """A step of the body tree: a layer (name, kind, output_shape, params), or a block, which also has
    input_shape, options and branches (each a list of steps)."""

    name: str
    kind: str
    output_shape: Shape
    params: int = Field(ge=0)
    input_shape: Optional[Shape] = None
    options: Optional[dict[str, Any]] = None
    branches: Optional[list[list["SummaryStep"]]] = None


class Summary(_Strict):
    """`nnc summary --format json`. The fields of LANGUAGE.md's contract (model, layers with name, kind,
    output_shape and params, total_params, trainable_params) and the extras of nnc."""

    schema_version: Literal[SUMMARY_SCHEMA_VERSION]  # type: ignore[valid-type]
    model: str
    input: SummaryInput
    layers: list[SummaryLayer] = Field(description="every layer, blocks flattened, in order")
    total_params: int = Field(ge=0)
    trainable_params: int = Field(ge=0)
    non_trainable_params: int = Field(ge=0)
    total_macs: int = Field(ge=0)
    weight_bytes: int = Field(ge=0)
    activation_bytes: int = Field(ge=0)
    body: list[SummaryStep]


# --- a training run: history.json and state.npz's meta ----------------------------------------


class History(BaseModel):
    """A run's history.json: Keras's History.history, `{"loss": [...], "val_loss": [...], "accuracy": [...],
    ...}` (one number an epoch, for every loss, metric and validation value the run tracks), plus
    `schema_version`, the one key that is not a list."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, list[float]] = Field(init=False)  # type: ignore[assignment]

    schema_version: Literal[HISTORY_SCHEMA_VERSION]  # type: ignore[valid-type]


class RunState(BaseModel):
    """The `meta` JSON string inside a run's state.npz (read by `nnc train --resume`)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[STATE_VERSION]  # type: ignore[valid-type]
    version: Literal[STATE_VERSION] = Field(  # type: ignore[valid-type]
        description="the checkpoint format `--resume` accepts")
    epoch: int = Field(ge=0, description="epochs completed")
    iterations: int = Field(ge=0, description="optimizer steps taken")
    history: dict[str, list[float]] = Field(description="as history.json, without schema_version")
    best: Optional[float] = Field(description="early stopping: the best monitored value so far")
    best_epoch: int = Field(ge=-1)
    wait: int = Field(ge=0)
    stopped_epoch: Optional[int]
    config: TrainConfig = Field(description="the train block, after command-line overrides")
    plateau: Optional[Plateau] = Field(None, description="lr_schedule reduce_on_plateau: its callback's state")
    lr: Optional[float] = Field(None, description="the learning rate reduce_on_plateau has set (null: none)")
    spec_source: str
    spec_path: str
    spec_sha256: str
    data: str
    data_sha256: str


# --- the nnc.* metadata of a compiled ONNX model -----------------------------------------------


class OnnxInput(_Strict):
    name: str
    dtype: Literal["float32", "int64"]
    shape: Shape
    vocab: Optional[int] = Field(None, description="int64 ids: each must be below it (nnc run checks)")


class OnnxExternalData(_Strict):
    location: str
    bytes: int = Field(ge=0)
    sha256: str


class OnnxMetadata(BaseModel):
    """The `nnc.*` entries of an ONNX model's metadata_props, as a JSON object (key -> value). Every
    value is a string (ONNX's rule); some hold JSON, described by `contentSchema`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: Literal[str(METADATA_SCHEMA_VERSION)] = Field(  # type: ignore[valid-type]
        alias="nnc.schema_version")
    model: str = Field(alias="nnc.model", description="the spec's model name")
    source_sha256: str = Field(alias="nnc.source_sha256", description="SHA-256 of the spec's text")
    source: Optional[str] = Field(
        None, alias="nnc.source", description="the spec's text, whose SHA-256 is nnc.source_sha256 (`nnc import` "
                                              "reads the spec back from it)")
    input: Json[OnnxInput] = Field(alias="nnc.input")
    output_shape: Json[Shape] = Field(alias="nnc.output_shape")
    layout: Literal["channels-last"] = Field(alias="nnc.layout")
    external_data: Optional[Json[OnnxExternalData]] = Field(
        None, alias="nnc.external_data", description="weights in a side file: its name, size and SHA-256")


# --- nnc eval --format json --------------------------------------------------------------------


class EvalResult(BaseModel):
    """`nnc eval --format json`: where the weights were evaluated, the loss, and each metric of the
    train block under its Keras name (`accuracy`, `auc`, ...), as Keras's evaluate() returns them."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float] = Field(init=False)  # type: ignore[assignment]

    schema_version: Literal[EVAL_SCHEMA_VERSION]  # type: ignore[valid-type]
    model: str
    data: str = Field(description="the --data argument")
    split: Literal["test", "all"] = Field(description="test: x_test, y_test; all: a file without a test split")
    samples: int = Field(ge=0)
    loss_function: str
    loss: float


# --- nnc schema --------------------------------------------------------------------------------


SCHEMAS: dict[str, type[BaseModel]] = {
    "check": CheckReport,
    "summary": Summary,
    "history": History,
    "state": RunState,
    "onnx-metadata": OnnxMetadata,
    "eval": EvalResult,
}


def json_schema(name: str) -> dict:
    """The JSON Schema (draft 2020-12) of the JSON that `name` describes (a key of SCHEMAS).

    Its objects admit fields they do not list: within one schema_version fields are only added, so
    a newer nnc's output still validates against an older nnc's schema. (The models themselves
    refuse unknown fields, and so do the tests, which close every object: a field nnc writes and
    its schema lacks fails there.)"""
    model = SCHEMAS[name]
    schema = _open(model.model_json_schema(by_alias=True))
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    schema["title"] = f"nnc {name}"
    schema.setdefault("description", (model.__doc__ or "").strip())
    return schema


def _open(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        for v in node.values():
            _open(v)
    elif isinstance(node, list):
        for v in node:
            _open(v)
    return node


def validate(name: str, data: Any) -> Any:
    """Parse `data` (decoded JSON) with the pydantic model of `name`: a pydantic ValidationError
    when it does not follow the contract."""
    return SCHEMAS[name].model_validate(data)


def dumps(name: str) -> str:
    return json.dumps(json_schema(name), indent=2)
