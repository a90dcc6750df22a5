"""Blocks (LANGUAGE.md, "Blocks"): residual, the merge blocks, repeat, nesting and naming.

Parameter counts are Keras's for the functional twin: a block adds no parameters (Keras's merge
layers have none), so a block's count is the sum of its layers', worked out by hand below."""

from __future__ import annotations

import json

import pytest

from nnc import check_source
from nnc.lang.model import Block, Layer
from nnc.lang.parser import BlockStmt, LayerStmt, parse
from nnc.tools.summary import to_json, to_text

HEAD = "model m\ninput x: float32[16, 16, 8]\n"


def ok(text: str):
    r = check_source(text)
    assert r.ok, [d.message for d in r.diagnostics]
    return r.model


def errors(text: str) -> list[tuple[int, int, str, str]]:
    r = check_source(text)
    return [(d.span.line, d.span.col, d.code, d.message) for d in r.diagnostics if d.is_error]


# --- parsing ----------------------------------------------------------------------------------


def test_blocks_parse_into_a_tree_on_one_line_or_across_lines():
    ast = parse(HEAD + "residual { conv2d 8 kernel=3 padding=same\n"
                       "           relu }\n"
                       "add {\n  branch { conv2d 8 kernel=1 }\n  branch {\n  }\n}\n"
                       "stage1: repeat 2 { relu }\n")
    assert not ast.syntax_errors
    res, add, rep = ast.statements[2:]
    assert isinstance(res, BlockStmt) and res.kind == "residual" and res.name is None
    assert [s.kind for s in res.body] == ["conv2d", "relu"] and all(isinstance(s, LayerStmt) for s in res.body)
    assert (res.span.line, res.span.end_line) == (3, 4)
    assert [(b.kind, len(b.body)) for b in add.body] == [("branch", 1), ("branch", 0)]
    assert (rep.name, rep.kind, rep.args[0].value, rep.body[0].kind) == ("stage1", "repeat", 2, "relu")


def test_syntax_errors_in_two_blocks_are_both_reported_and_the_rest_still_checked():
    text = HEAD + ("residual {\n  conv2d 8 kernel=\n  conv2d 8 kernel=3 padding=sane\n}\n"
                   "add {\n  branch { dense 8 , }\n  branch { }\n}\n"
                   "dense 4 activation=rleu\n")
    got = errors(text)
    lines = [(l, code) for l, _, code, _ in got]
    # both syntax errors, and the option errors of the lines around them (same block and after)
    assert (4, "syntax") in lines and (8, "syntax") in lines
    assert (5, "bad-value") in lines and (11, "bad-value") in lines
    # no made-up structural error for the blocks whose lines were dropped
    assert not [c for _, c in lines if c in ("bad-block", "merge-mismatch")]


def test_an_unclosed_block_is_reported_at_its_brace_and_checking_goes_on():
    got = errors(HEAD + "repeat 2 {\n  dense 8 activation=rleu\n")
    assert got[0][:3] == (3, 10, "syntax") and "never closed" in got[0][3]
    assert (4, "bad-value") in [(l, c) for l, _, c, _ in got]


def test_branches_and_blocks_may_share_a_line_inside_a_block():
    one_line = check_source(HEAD + "add { branch { } branch { relu } }\nconcat { branch { } branch { dense 3 } }\n")
    assert one_line.ok, [d.message for d in one_line.diagnostics]
    spread = check_source(HEAD + "add {\n  branch { }\n  branch { relu }\n}\nconcat {\n  branch { }\n  branch { dense 3 }\n}\n")
    assert [(b.kind, len(b.branches)) for b in one_line.model.body] == [(b.kind, len(b.branches)) for b in spread.model.body]
    assert one_line.model.output_shape == spread.model.output_shape
    # the model's own steps stay one a line, after a block too
    got = errors(HEAD + "residual { relu } dense 2\n")
    assert got[0][:3] == (3, 19, "syntax") and "own" in got[0][3]


def test_deep_nesting_is_an_error_not_a_crash():
    text = HEAD + "residual {\n" * 300 + "relu\n" + "}\n" * 300
    got = errors(text)
    assert got and all(code == "syntax" for _, _, code, _ in got)
    assert "nest more than" in got[0][3]


# --- shapes and counts ------------------------------------------------------------------------


def test_residual_adds_its_input_and_adds_no_parameters():
    m = ok(HEAD + "residual {\n  conv2d 8 kernel=3 padding=same activation=relu\n  conv2d 8 kernel=3 padding=same\n}\n")
    (block,) = m.body
    assert isinstance(block, Block) and block.name == "residual_1" and block.merge == "add"
    assert block.branches[0] == [] and [l.name for l in block.branches[1]] == ["conv2d_1", "conv2d_2"]
    assert block.input_shape == block.output_shape == (16, 16, 8)
    assert block.params == 2 * (3 * 3 * 8 * 8 + 8) == m.total_params  # 1,168
    assert m.output_shape == (16, 16, 8)


@pytest.mark.parametrize("kind", ["add", "multiply", "average", "maximum", "minimum", "subtract"])
def test_elementwise_merges_keep_the_shape(kind):
    m = ok(HEAD + f"{kind} {{\n  branch {{ conv2d 4 kernel=1 }}\n  branch {{ conv2d 4 kernel=3 padding=same }}\n}}\n"
           "flatten\n")
    block = m.body[0]
    assert (block.name, block.kind, block.output_shape) == (f"{kind}_1", kind, (16, 16, 4))
    assert block.params == (8 + 1) * 4 + (9 * 8 + 1) * 4 == 328
    assert m.output_shape == (16 * 16 * 4,)


def test_concat_joins_the_last_axis_and_an_empty_branch_is_the_input():
    m = ok(HEAD + "concat {\n  branch { }\n  branch { conv2d 32 kernel=3 padding=same }\n"
           "  branch { conv2d 16 kernel=1 }\n}\n")
    assert m.output_shape == (16, 16, 8 + 32 + 16)
    assert m.total_params == (9 * 8 + 1) * 32 + (8 + 1) * 16 == 2480
    assert m.body[0].options == {"axis": -1}


@pytest.mark.parametrize("axis,out", [(1, (32, 16, 8)), (-3, (32, 16, 8)), (2, (16, 32, 8)), (-2, (16, 32, 8)),
                                      (3, (16, 16, 16)), (-1, (16, 16, 16))])
def test_concat_axis_counts_as_keras_does(axis, out):
    m = ok(HEAD + f"concat axis={axis} {{\n  branch {{ }}\n  branch {{ relu }}\n}}\n")
    assert m.output_shape == out


def test_a_model_that_ends_in_a_concat_outputs_the_concat():
    m = ok("model m\ninput x: float32[6]\nconcat {\n  branch { dense 3 }\n  branch { dense 5 }\n}\n")
    assert m.output_shape == (8,) and [l.output_shape for l in m.layers] == [(3,), (5,)]


def test_repeat_expands_in_place_and_numbers_the_copies_in_reading_order():
    m = ok("model m\ninput x: float32[16]\ndense 8\nrepeat 3 {\n  dense 8 activation=relu\n  dropout 0.1\n}\n"
           "dense 2 activation=softmax\n")
    assert [l.name for l in m.layers] == ["dense_1", "dense_2", "dropout_1", "dense_3", "dropout_2", "dense_4",
                                          "dropout_3", "dense_5"]
    rep = m.body[1]
    assert (rep.name, rep.kind, rep.options) == ("repeat_1", "repeat", {"times": 3})
    assert [n.name for n in rep.branches[0]] == ["dense_2", "dropout_1", "dense_3", "dropout_2", "dense_4", "dropout_3"]
    assert rep.params == 3 * (8 * 8 + 8) and m.total_params == (16 * 8 + 8) + 3 * 72 + 18


LANGUAGE_EXAMPLE = ("model t\ninput x: float32[10, 16]\n"
                    "repeat 3 {                       # the body three times in sequence\n"
                    "  residual { layernorm\n"
                    "             attention heads=4 key_dim=16 }\n"
                    "}\n")


def test_the_language_contract_example_numbers_the_copies_as_it_says():
    m = ok(LANGUAGE_EXAMPLE)
    assert [l.name for l in m.layers] == ["layernorm_1", "attention_1", "layernorm_2", "attention_2",
                                          "layernorm_3", "attention_3"]
    assert [b.name for b in m.body[0].branches[0]] == ["residual_1", "residual_2", "residual_3"]
    # layernorm 2*16; attention: q, k, v 16*4*16 + 4*16 each, output 4*16*16 + 16
    assert m.total_params == 3 * (2 * 16 + 3 * (16 * 64 + 64) + (64 * 16 + 16)) == 13008


def test_repeat_of_a_shrinking_body_checks_each_copy_on_its_own_input():
    m = ok("model m\ninput x: float32[20, 20, 3]\nrepeat 2 {\n  conv2d 4 kernel=3\n  maxpool2d 2\n}\n")
    assert [l.output_shape for l in m.layers] == [(18, 18, 4), (9, 9, 4), (7, 7, 4), (3, 3, 4)]
    assert [l.params for l in m.layers] == [(27 + 1) * 4, 0, (36 + 1) * 4, 0]


def test_nested_and_named_blocks():
    text = ("model m\ninput x: float32[8, 8, 4]\n"
            "stage1: repeat 2 {\n"
            "  residual { conv2d 4 kernel=3 padding=same\n"
            "             relu }\n"
            "}\n"
            "mix: add {\n"
            "  branch { residual { conv2d 4 kernel=1 } }\n"
            "  branch { concat {\n"
            "    branch { conv2d 2 kernel=1 }\n"
            "    branch { conv2d 2 kernel=1 }\n"
            "  } }\n"
            "}\n")
    m = ok(text)
    stage, mix = m.body
    assert stage.name == "stage1" and [b.name for b in stage.branches[0]] == ["residual_1", "residual_2"]
    assert [l.name for l in stage.layers()] == ["conv2d_1", "relu_1", "conv2d_2", "relu_2"]
    assert mix.name == "mix" and [b[0].name for b in mix.branches] == ["residual_3", "concat_1"]
    assert [l.name for l in m.layers] == ["conv2d_1", "relu_1", "conv2d_2", "relu_2", "conv2d_3", "conv2d_4",
                                          "conv2d_5"]
    assert m.total_params == 2 * (36 * 4 + 4) + (4 * 4 + 4) + 2 * (4 * 2 + 2) == 336
    assert m.output_shape == (8, 8, 4)


def test_layers_inside_blocks_read_the_right_input_shapes():
    m = ok("model m\ninput x: float32[8, 8, 3]\nconv2d 6 kernel=3\n"
           "add {\n  branch { conv2d 6 kernel=1 }\n  branch { conv2d 6 kernel=3 padding=same }\n}\n")
    assert [l.input_shape for l in m.layers] == [(8, 8, 3), (6, 6, 6), (6, 6, 6)]


# --- errors -----------------------------------------------------------------------------------


def test_merge_mismatch_is_at_the_block_line_and_names_every_branch_shape():
    got = errors(HEAD + "\nconcat {\n  branch { }\n  branch { conv2d 4 kernel=3 }\n}\n")
    assert len(got) == 1
    line, col, code, msg = got[0]
    assert (line, col, code) == (4, 1, "merge-mismatch")
    assert "[16, 16, 8]" in msg and "[14, 14, 4]" in msg
    help = check_source(HEAD + "\nconcat {\n  branch { }\n  branch { conv2d 4 kernel=3 }\n}\n").errors[0].help
    assert "padding=same" in help


def test_projection_help_for_a_strided_branch():
    r = check_source(HEAD + "add {\n  branch { }\n  branch { conv2d 32 kernel=3 stride=2 padding=same }\n}\n")
    (d,) = r.errors
    assert d.code == "merge-mismatch" and "conv2d 32 kernel=1 stride=2" in d.help


def test_dtype_mismatch_between_branches():
    got = errors("model m\ninput t: int64[10] vocab=50\nconcat {\n  branch { }\n  branch { embedding 4 }\n}\n")
    assert [(l, c) for l, _, c, _ in got] == [(3, "merge-mismatch")] and "int64" in got[0][3]


@pytest.mark.parametrize("body,code,line", [
    ("residual { }\n", "bad-block", 3),
    ("concat {\n}\n", "bad-block", 3),
    ("add {\n  branch { relu }\n}\n", "bad-block", 3),
    ("subtract {\n  branch { }\n}\n", "bad-block", 3),
    ("add {\n  relu\n  branch { }\n}\n", "bad-block", 4),
    ("branch { relu }\n", "bad-block", 3),
    ("repeat 0 { relu }\n", "bad-value", 3),
    ("repeat -2 { relu }\n", "bad-value", 3),
    ("repeat { relu }\n", "missing-option", 3),
    ("repeat 2.5 { relu }\n", "bad-value", 3),
    ("repeat 2 { a: relu }\n", "duplicate-name", 3),
    ("repeat 2 { s: residual { relu } }\n", "duplicate-name", 3),
    ("a: relu\na: residual { relu }\n", "duplicate-name", 4),
    ("add foo=1 {\n  branch { }\n  branch { }\n}\n", "unknown-option", 3),
    ("concat 3 {\n  branch { }\n  branch { }\n}\n", "too-many-positional", 3),
    ("concat axis=4 {\n  branch { }\n  branch { }\n}\n", "bad-value", 3),
    ("add {\n  b: branch { }\n  branch { }\n}\n", "bad-block", 4),
    ("add {\n  branch 2 { }\n  branch { }\n}\n", "too-many-positional", 4),
    ("residul { relu }\n", "unknown-block", 3),
    ("dense 4 { relu }\n", "unknown-block", 3),
    ("residual\n", "syntax", 3),
    ("residual { train { epochs 1 } }\n", "bad-block", 3),
    ("repeat 1000000 { repeat 1000 { relu } }\n", "bad-value", 3),
])
def test_block_errors(body, code, line):
    r = check_source(HEAD + body)
    assert not r.ok and r.model is None
    assert (line, code) in [(d.span.line, d.code) for d in r.errors], [(d.span.line, d.code, d.message) for d in r.errors]
    # the block's own diagnostics say how to fix them (bind's option messages echo what was received)
    assert all(d.help for d in r.errors if d.code in ("bad-block", "unknown-block", "merge-mismatch", "missing-option"))


def test_a_mistake_in_every_copy_of_a_repeat_is_reported_once():
    r = check_source(HEAD + "repeat 4 {\n  conv2d 8 kernel=3 activation=rleu\n}\n")
    assert [(d.span.line, d.code) for d in r.errors] == [(4, "bad-value")]


# --- warnings ---------------------------------------------------------------------------------


def test_no_activation_after_softmax_across_branches():
    text = ("model m\ninput x: float32[8]\nconcat {\n  branch { dense 4 activation=softmax }\n  branch { relu }\n}\n"
            "dense 2 activation=softmax\n")
    assert check_source(text).diagnostics == []
    text = "model m\ninput x: float32[8]\nrepeat 2 {\n  dense 4 activation=softmax\n  relu\n}\n"
    (d,) = check_source(text).diagnostics  # once, though both copies do it
    assert (d.code, d.span.line) == ("activation-after-softmax", 5)


def test_an_average_of_softmaxes_is_a_probability_for_the_loss():
    text = ("model m\ninput x: float32[8]\naverage {\n  branch { dense 3 activation=softmax }\n"
            "  branch { dense 3 activation=softmax }\n}\ntrain {\n  loss sparse_categorical_crossentropy\n}\n")
    assert check_source(text).diagnostics == []
    text = text.replace("average", "add")
    (d,) = check_source(text).diagnostics
    assert d.code == "loss-without-probabilities" and "add merge" in d.message


# --- summary ----------------------------------------------------------------------------------

RESNET = ("model r\ninput x: float32[8, 8, 4]\nconv2d 8 kernel=3 padding=same\n"
          "residual {\n  conv2d 8 kernel=3 padding=same activation=relu\n  conv2d 8 kernel=3 padding=same\n}\n"
          "add {\n  branch { conv2d 16 kernel=1 stride=2 }\n  branch { conv2d 16 kernel=3 stride=2 padding=same }\n}\n"
          "flatten\ndense 10 activation=softmax\n")


def test_summary_json_keeps_the_flat_layers_and_adds_the_tree():
    m = ok(RESNET)
    data = json.loads(json.dumps(to_json(m)))
    assert [l["name"] for l in data["layers"]] == ["conv2d_1", "conv2d_2", "conv2d_3", "conv2d_4", "conv2d_5",
                                                   "flatten_1", "dense_1"]
    assert all({"name", "kind", "output_shape", "params"} <= set(l) for l in data["layers"])
    assert sum(l["params"] for l in data["layers"]) == data["total_params"] == m.total_params
    body = data["body"]
    assert [n["name"] for n in body] == ["conv2d_1", "residual_1", "add_1", "flatten_1", "dense_1"]
    res, add = body[1], body[2]
    assert res["kind"] == "residual" and res["output_shape"] == [8, 8, 8] and res["params"] == 2 * (72 * 8 + 8)
    assert res["branches"][0] == [] and [n["name"] for n in res["branches"][1]] == ["conv2d_2", "conv2d_3"]
    assert add["output_shape"] == [4, 4, 16] and add["params"] == (8 + 1) * 16 + (72 + 1) * 16
    assert [len(b) for b in add["branches"]] == [1, 1]
    # the merges' outputs count as activation memory
    assert data["activation_bytes"] == sum(l["activation_bytes"] for l in data["layers"]) + 4 * (8 * 8 * 8 + 4 * 4 * 16)


def test_summary_text_nests_the_layers_under_their_block():
    out = to_text(ok(RESNET)).splitlines()
    row = {line.split()[0]: line for line in out if line.strip() and line.split()[0].count("_") == 1}
    assert row["residual_1"].startswith("residual_1 (residual") and "(None, 8, 8, 8)" in row["residual_1"]
    assert f"{2 * 584:,}" in row["residual_1"]
    i = next(k for k, line in enumerate(out) if line.startswith("residual_1"))
    assert out[i + 1].startswith("  conv2d_2 (conv2d)") and out[i + 2].startswith("  conv2d_3 (conv2d)")
    j = next(k for k, line in enumerate(out) if line.startswith("add_1"))
    assert [out[j + k].strip().split(" (")[0] for k in range(1, 5)] == ["branch 1", "conv2d_4", "branch 2", "conv2d_5"]
    assert out[j + 2].startswith("    conv2d_4")
    assert any(line.startswith(" Total params: 5,346") for line in out)


def test_summary_cli_json_on_a_block_spec(tmp_path, capsys):
    from nnc.cli import main

    path = tmp_path / "r.nnspec"
    path.write_text(RESNET)
    assert main(["summary", str(path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == 5346 and data["body"][2]["kind"] == "add"


# --- Keras parity -------------------------------------------------------------------------------

KERAS_SPECS = [
    RESNET,
    "model i\ninput x: float32[16, 16, 8]\nconv2d 16 kernel=3 padding=same activation=relu\n"
    "concat {\n  branch { }\n  branch { conv2d 8 kernel=1 activation=relu }\n  branch {\n"
    "    conv2d 8 kernel=1 activation=relu\n    conv2d 8 kernel=3 padding=same activation=relu\n  }\n}\n"
    "stage: repeat 2 {\n  residual {\n    conv2d 32 kernel=3 padding=same activation=relu\n    dropout 0.1\n  }\n}\n"
    "subtract {\n  branch { relu }\n  branch { }\n}\nglobalavgpool\ndense 10 activation=softmax\n",
    "model e\ninput x: float32[12, 6]\n"
    + "".join(f"{k} {{\n  branch {{ dense 6 activation=relu }}\n  branch {{ conv1d 6 kernel=3 padding=same }}\n}}\n"
              for k in ("add", "multiply", "average", "maximum", "minimum"))
    + "concat axis=1 {\n  branch { }\n  branch { conv1d 6 kernel=3 }\n}\nconcat axis=-2 {\n  branch { }\n  branch { }\n}\n"
    "lstm 4\n",
]


@pytest.mark.reference
@pytest.mark.parametrize("text", KERAS_SPECS + [LANGUAGE_EXAMPLE], ids=["resnet", "inception", "merges", "language"])
def test_keras_functional_twin_has_the_same_shapes_and_counts(text):
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    from test_checker_specs import keras_model  # block-aware: Keras's merge layers join the branches

    model = ok(text)
    km, made = keras_model(keras, model)
    got = [(tuple(out.shape[1:]), kl.count_params()) for kl, out in made]
    assert got == [(layer.output_shape, layer.params) for layer in model.layers]
    assert tuple(km.output.shape[1:]) == model.output_shape
    assert km.count_params() == model.total_params


def test_block_diagnostics_in_the_json_and_sarif_reports():
    from nnc.tools.report import format_results

    r = check_source(HEAD + "add {\n  branch { }\n  branch { conv2d 4 kernel=3 }\n}\n", "b.nnspec")
    (d,) = json.loads(format_results([r], "json"))
    assert (d["line"], d["column"], d["code"], d["severity"]) == (3, 1, "merge-mismatch", "error")
    assert "[16, 16, 8]" in d["message"] and "[14, 14, 4]" in d["message"] and d["help"]
    run = json.loads(format_results([r], "sarif"))["runs"][0]
    (res,) = run["results"]
    assert run["tool"]["driver"]["rules"][res["ruleIndex"]]["id"] == "merge-mismatch"
    assert res["locations"][0]["physicalLocation"]["region"]["startLine"] == 3
