"""The JSON contracts (nnc.tools.schemas, `nnc schema NAME`): every JSON nnc writes carries a schema_version
and validates, with jsonschema (an implementation independent of pydantic), against the schema that
`nnc schema` prints; real outputs of nnc commands on the repository's specs, not hand-made samples.
The schemas are not vacuous (broken documents are rejected), and `nnc check` in text form never
imports pydantic."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ci_helpers import CASES, REPO, repo_specs, run_nnc

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("pydantic")

NAMES = ("check", "summary", "history", "state", "onnx-metadata", "eval")

TINY = """model tiny
input x: float32[4]
dense 6 activation=relu
dropout 0.1
dense 3 activation=softmax

train {
  loss sparse_categorical_crossentropy
  optimizer adam lr=0.01
  metrics accuracy
  epochs 2
  batch_size 8
  validation_split 0.25
  seed 1
}
"""


def schema(capsys, name: str) -> dict:
    rc, out, err = run_nnc(capsys, "schema", name)
    assert rc == 0, err
    return json.loads(out)


def closed(node):
    """The schema with every object that lists its fields closed to others: what nnc writes today
    must be described in full (the published schema admits fields a later nnc adds)."""
    if isinstance(node, dict):
        node = {k: closed(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node
    return [closed(v) for v in node] if isinstance(node, list) else node


def validator(capsys, name: str, strict: bool = True):
    s = schema(capsys, name)
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(closed(s) if strict else s)


def assert_valid(v, doc, what=""):
    """`doc` follows the closed schema `v` (hence also the published one, which only admits more)."""
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]
    assert not errors, f"{what}: {errors[:5]}"


def test_every_name_prints_a_valid_json_schema(capsys):
    from nnc.commands.schema import NAMES as command_names
    from nnc.tools.schemas import SCHEMAS

    assert tuple(SCHEMAS) == command_names == NAMES
    for name in NAMES:
        s = schema(capsys, name)
        jsonschema.Draft202012Validator.check_schema(s)
        assert s["title"] == f"nnc {name}" and s["type"] in ("array", "object")
    rc, _, err = run_nnc(capsys, "schema", "nope")
    assert rc == 2 and "invalid choice" in err


def test_summary_json_of_every_repo_spec_validates(capsys):
    v = validator(capsys, "summary")
    from nnc.lang.checker import check_file
    from nnc.tools.schemas import validate

    checked = 0
    for spec in repo_specs():
        if not check_file(str(spec)).ok:
            continue
        rc, out, err = run_nnc(capsys, "summary", str(spec), "--format", "json")
        assert rc == 0, (spec, err)
        doc = json.loads(out)
        assert doc["schema_version"] == 1
        assert_valid(v, doc, spec.name)
        validate("summary", doc)  # pydantic agrees with jsonschema
        # LANGUAGE.md's contract, which the schema must keep requiring
        for key in ("model", "layers", "total_params", "trainable_params"):
            assert key in v.schema["required"], key
        layer = v.schema["$defs"]["SummaryLayer"]["required"]
        assert {"name", "kind", "output_shape", "params"} <= set(layer)
        checked += 1
    assert checked >= 20  # specs/ alone has 20 clean specs


def test_check_json_report_validates_with_errors_warnings_and_budget(capsys, in_cases):
    v = validator(capsys, "check")
    from nnc.tools.schemas import validate

    names = sorted(p.name for p in CASES.glob("*.nnspec"))
    _, out, _ = run_nnc(capsys, "check", "--format", "json", *names)
    diags = json.loads(out)
    assert {d["severity"] for d in diags} == {"error", "warning"} and len(diags) >= 10
    assert all(d["schema_version"] == 1 for d in diags)
    assert_valid(v, diags, "cases")
    validate("check", diags)
    # clean specs give the empty list; --max-params adds param-budget, --warnings-as-errors changes severities
    for argv in ([str(REPO / "specs")], ["--max-params", "10", str(REPO / "specs" / "lenet5.nnspec")],
                 ["--warnings-as-errors", "warnings.nnspec"]):
        _, out, _ = run_nnc(capsys, "check", "--format", "json", *argv)
        doc = json.loads(out)
        assert_valid(v, doc, argv)
    assert doc and all(d["severity"] == "error" for d in doc)


def test_schemas_reject_what_breaks_the_contract(capsys):
    """Each schema says something: a document with a field missing, of the wrong type or unknown fails."""
    check, summary, history = (validator(capsys, n) for n in ("check", "summary", "history"))
    d = {"schema_version": 1, "file": "a.nnspec", "line": 1, "column": 1, "end_line": 1, "end_column": 2,
         "severity": "error", "code": "syntax", "message": "m", "help": None}
    assert check.is_valid([d])
    assert not check.is_valid(d)  # the report is a list
    assert not check.is_valid([{**d, "code": "no-such-code"}])
    assert not check.is_valid([{**d, "severity": "info"}])
    assert not check.is_valid([{k: v for k, v in d.items() if k != "schema_version"}])
    assert not check.is_valid([{**d, "schema_version": 2}])
    assert not summary.is_valid({"model": "m", "layers": []})
    # a field a later nnc adds: the published schema takes it, the closed one (what nnc writes today) does not
    published = validator(capsys, "check", strict=False)
    assert published.is_valid([{**d, "fix": "x"}]) and not check.is_valid([{**d, "fix": "x"}])
    assert history.is_valid({"schema_version": 1, "loss": [0.5, 0.25], "learning_rate": [0.01, 0.01]})
    assert not history.is_valid({"loss": [0.5]})  # no schema_version
    assert not history.is_valid({"schema_version": 1, "loss": 0.5})  # a metric is a list
    assert not history.is_valid({"schema_version": 1, "loss": ["a"]})


@pytest.fixture
def run_dir(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    (tmp_path / "tiny.nnspec").write_text(TINY)
    out = tmp_path / "run"
    rc, _, err = run_nnc(capsys, "train", str(tmp_path / "tiny.nnspec"), "--data", str(tmp_path / "d.npz"),
                         "--out", str(out), "-q")
    assert rc == 0, err
    return out


def test_history_and_run_state_validate_and_resume_still_reads_them(capsys, run_dir):
    from nnc.tools.schemas import validate
    from nnc.training.loop import read_state

    hv, sv = validator(capsys, "history"), validator(capsys, "state")
    history = json.loads((run_dir / "history.json").read_text())
    assert history["schema_version"] == 1
    assert_valid(hv, history, "history.json")
    metrics = {k: v for k, v in history.items() if k != "schema_version"}
    assert set(metrics) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in metrics.values())
    assert validate("history", history).model_extra == metrics

    _, meta = read_state(str(run_dir))
    assert meta["schema_version"] == 1
    assert_valid(sv, meta, "state.npz meta")
    state = validate("state", meta)
    assert state.config.optimizer.name == "adam" and state.history == metrics  # the in-memory history: lists only

    # resume reads the state and rewrites history.json, which still validates and has the new epoch
    rc, _, err = run_nnc(capsys, "train", "--resume", str(run_dir), "--epochs", "3", "-q")
    assert rc == 0, err
    history = json.loads((run_dir / "history.json").read_text())
    assert_valid(hv, history, "history.json after resume")
    assert [len(v) for k, v in history.items() if k != "schema_version"] == [3] * 4


def test_eval_json_validates(capsys, run_dir):
    from nnc.tools.schemas import validate

    v = validator(capsys, "eval")
    spec, data = run_dir.parent / "tiny.nnspec", run_dir.parent / "d.npz"
    rc, out, err = run_nnc(capsys, "eval", str(spec), "--weights", str(run_dir / "weights.npz"), "--data", str(data),
                           "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["schema_version"] == 1 and doc["split"] == "all" and {"loss", "accuracy"} <= set(doc)
    assert_valid(v, doc, "nnc eval")
    assert validate("eval", doc).model_extra == {"accuracy": doc["accuracy"]}
    assert not v.is_valid({**doc, "accuracy": "high"}) and not v.is_valid({**doc, "split": "train"})


def test_onnx_metadata_validates_inline_and_with_external_data(capsys, tmp_path):
    onnx = pytest.importorskip("onnx")
    from nnc.lang.checker import check_file
    from nnc.lang.weights import init_weights
    from nnc.onnx import export as ox
    from nnc.tools.schemas import validate

    v = validator(capsys, "onnx-metadata")
    props = v.schema["properties"]
    spec = REPO / "specs" / "imdb_lstm.nnspec"  # int64 ids: nnc.input has a vocab
    rc, _, err = run_nnc(capsys, "compile", str(spec), "-o", str(tmp_path / "m.onnx"))
    assert rc == 0, err
    model = check_file(str(spec)).model
    ext = tmp_path / "ext.onnx"
    ox.save(ox.build(model, init_weights(model, 0)), str(ext), threshold=0)  # weights in ext.onnx.data
    for path, external in ((tmp_path / "m.onnx", False), (ext, True)):
        m = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in m.metadata_props if p.key.startswith("nnc.")}
        assert meta["nnc.schema_version"] == "1" and ("nnc.external_data" in meta) == external
        assert_valid(v, meta, path.name)
        # jsonschema treats contentSchema as an annotation: validate the JSON the strings hold too
        for key, value in meta.items():
            sub = props[key].get("contentSchema") or next(
                (a.get("contentSchema") for a in props[key].get("anyOf", []) if "contentSchema" in a), None)
            if sub is not None:
                sub = {**sub, "$defs": v.schema.get("$defs", {})}
                assert_valid(jsonschema.Draft202012Validator(sub), json.loads(value), key)
        parsed = validate("onnx-metadata", meta)
        assert parsed.input.dtype == "int64" and parsed.input.vocab and parsed.output_shape == [1]
    assert not v.is_valid({**meta, "nnc.layout": "channels-first"})
    assert not v.is_valid({**meta, "nnc.unknown": "x"})


@pytest.mark.parametrize("argv, imports", [(["check", "--format", "text"], False),
                                           (["check", "--format", "json"], False),
                                           (["schema", "history"], True)], ids=["text", "json", "schema"])
def test_check_never_imports_pydantic(argv, imports):
    """`nnc check` stays fast: the JSON is written with the standard library; only `nnc schema` (and
    the tests) import pydantic."""
    code = ("import sys; from nnc.cli import main; rc = main(sys.argv[1:]); "
            "print('pydantic' in sys.modules, file=sys.stderr)")
    argv = argv + ([str(CASES / "warnings.nnspec")] if argv[0] == "check" else [])
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env={**os.environ, "NNC_DEBUG": "1"})
    assert proc.stderr.strip().splitlines()[-1] == str(imports), (argv, proc.stderr)
