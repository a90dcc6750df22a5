"""`nnc fmt`: idempotent, meaning-preserving (the checked model is identical before and
after), comments kept in order; `--check` catches an unformatted file and changes nothing.
Properties hold over every spec in the repo, the golden cases, and generated specs."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ci_helpers import CASES, GOLDEN, assert_formats_well, repo_specs, run_nnc
from nnc.lang.checker import check_source
from nnc.lang.fmt import format_source, split_comment


SPECS = [p for p in repo_specs()] + [CASES / n for n in sorted(GOLDEN) if n != "syntax.nnspec"]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_spec_in_the_repo_formats_idempotently_and_keeps_its_meaning(path):
    text = path.read_text(encoding="utf-8")
    assert_formats_well(text)


def test_the_contract_convnet_in_canonical_layout():
    """Written by hand: the layout the README shows."""
    messy = (
        "\n\n# The convnet.\nmodel   mnist_convnet\ninput image :float32[ 28,28 ,1 ]   # channels last\n"
        "  conv2d 32 kernel=3   activation=relu\nmaxpool2d 2\n\n\n\nflatten\ndense 10 activation=softmax  # probs\n"
        "expect params == 54410\ntrain {  loss sparse_categorical_crossentropy\n    optimizer sgd lr=0.01\n"
        "epochs 2 }\n"
    )
    want = (
        "# The convnet.\nmodel mnist_convnet\n\ninput image: float32[28, 28, 1]  # channels last\n\n"
        "conv2d    32 kernel=3 activation=relu\nmaxpool2d 2\n\nflatten\ndense 10 activation=softmax  # probs\n\n"
        "expect params == 54410\n\ntrain {\n  loss sparse_categorical_crossentropy\n  optimizer sgd lr=0.01\n"
        "  epochs 2\n}\n"
    )
    assert format_source(messy)[0] == want
    # conv 32*(3*3*1+1) = 320, dense 13*13*32*10+10 = 54090: the expect line holds
    assert check_source(want).ok


def test_comments_stay_with_their_statements():
    text = ("model m  # name\ninput x: float32[8]\n# about the hidden layer\ndense 4 activation=relu # hidden\n"
            "dense 2  activation=softmax\ntrain {  # training\n  # the loss\n  loss sparse_categorical_crossentropy\n"
            "}  # done\n# the end\n")
    out = assert_formats_well(text)
    lines = out.splitlines()
    assert lines[0] == "model m  # name"
    i = lines.index("# about the hidden layer")
    assert lines[i + 1].startswith("dense 4 activation=relu") and lines[i + 1].endswith("# hidden")
    assert "train {  # training" in lines and "  # the loss" in lines and "}  # done" in lines
    assert lines[-1] == "# the end"


def test_trailing_comments_of_a_group_share_a_column():
    out = assert_formats_well("model m\ninput x: float32[8]\ndense 4  # a\ndropout 0.5 # b\ndense 2 activation=softmax\n")
    a, b = (line for line in out.splitlines() if "#" in line)
    assert a.index("#") == b.index("#")


def test_a_comment_continuing_a_trailing_comment_stays_in_its_column():
    src = (
        "model m\ninput x: float32[4]\n"
        "dense 8        # first line of a long note\n"
        "               # its second line\n"
        "dense 1 activation=sigmoid\n"
        "# a full-line comment stays at the left\n"
        "relu\n"
    )
    text, diags = format_source(src)
    assert not diags
    out = text.splitlines()
    first = next(i for i, line in enumerate(out) if "first line" in line)
    assert out[first + 1].strip() == "# its second line"
    assert out[first + 1].index("#") == out[first].index("#")
    assert "# a full-line comment stays at the left" in out
    assert format_source(text)[0] == text


def test_a_hash_inside_quotes_is_not_a_comment():
    assert split_comment("dense 3 note='a # b'  # real") == ("dense 3 note='a # b'  ", "# real")
    assert split_comment('x "#" y') == ('x "#" y', None)


def test_a_file_with_syntax_errors_is_not_formatted(capsys, tmp_path):
    path = tmp_path / "bad.nnspec"
    original = (CASES / "syntax.nnspec").read_text()
    path.write_text(original)
    assert format_source(original)[0] is None
    rc, out, err = run_nnc(capsys, "fmt", str(path))
    assert rc == 1
    assert "bad.nnspec:3:20: error:" in err and "not formatted" in err
    assert path.read_text() == original


def test_check_catches_an_unformatted_file_and_changes_nothing(capsys, tmp_path):
    path = tmp_path / "messy.nnspec"
    messy = "model m\ninput x:float32[8]\ndense 4\n"
    path.write_text(messy)
    os.chmod(path, 0o640)
    before = path.stat()
    rc, out, err = run_nnc(capsys, "fmt", "--check", str(path))
    assert rc == 1
    assert "-input x:float32[8]" in out and "+input x: float32[8]" in out  # a unified diff
    assert "1 file would be reformatted" in err
    assert path.read_text() == messy and path.stat().st_mtime_ns == before.st_mtime_ns
    rc, _, err = run_nnc(capsys, "fmt", str(path))
    assert rc == 0 and "reformatted" in err
    assert path.read_text() == "model m\n\ninput x: float32[8]\n\ndense 4\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # permissions kept by the atomic rewrite
    assert not [p for p in tmp_path.iterdir() if p.name != "messy.nnspec"]  # no temporary left behind
    rc, out, _ = run_nnc(capsys, "fmt", "--check", str(tmp_path))  # a directory stands for its specs
    assert (rc, out) == (0, "")


def test_missing_files_are_io_errors(capsys, tmp_path):
    rc, _, err = run_nnc(capsys, "fmt", "--check", str(tmp_path / "absent.nnspec"))
    assert rc == 2 and "cannot read" in err


def test_standard_input_to_standard_output(capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("model m\ninput x: float32[8]\n  dense 4\n"))
    rc, out, _ = run_nnc(capsys, "fmt", "-")
    assert (rc, out) == (0, "model m\n\ninput x: float32[8]\n\ndense 4\n")


# --- generated specs ------------------------------------------------------------------------

SPACE = st.sampled_from([" ", "  ", "\t", "   "])
COMMENT = st.text(alphabet="abc xyz'\"#:,=[]0123", max_size=12).map(lambda s: "#" + s)


@st.composite
def spaced(draw, tokens: list[str]) -> str:
    """Tokens joined by random runs of spaces and tabs, with random indentation."""
    out = draw(st.sampled_from(["", " ", "    ", "\t"]))
    for i, t in enumerate(tokens):
        out += (draw(SPACE) if i else "") + t
    if draw(st.booleans()) and draw(st.integers(0, 3)) == 0:
        out += draw(SPACE) + draw(COMMENT)
    return out


def _size(draw, k: int) -> str:
    return draw(st.sampled_from([str(k), f"{k}x{k}", f"{k}X{k}"]))


@st.composite
def layer_tokens(draw, state: dict) -> list[str]:
    """One layer valid for the current shape; `state` tracks the rank and spatial size."""
    rank, size = state["rank"], state["size"]
    choices = ["dropout", "relu", "tanh"]
    if rank == 3:
        choices += ["conv2d", "flatten", "globalavgpool"] + (["maxpool2d"] if size >= 2 else [])
    elif rank == 2:
        choices += ["conv1d", "lstm", "gru", "rnn", "dense"] + (["avgpool1d"] if size >= 2 else [])
    else:
        choices += ["dense"]
    kind = draw(st.sampled_from(choices))
    positional, options = [], []
    if kind in ("conv2d", "conv1d"):
        k = draw(st.integers(1, min(size, 3)))
        same = draw(st.booleans())
        positional = [str(draw(st.integers(1, 8)))]
        kernel = _size(draw, k) if kind == "conv2d" else str(k)
        options = [(draw(st.sampled_from(["kernel", "kernel_size"])), kernel),
                   ("activation", draw(st.sampled_from(["relu", "linear", "tanh"])))]
        if same:
            options.append(("padding", "same"))
        else:
            state["size"] = size - k + 1
    elif kind in ("maxpool2d", "avgpool1d"):
        positional = [_size(draw, 2) if kind == "maxpool2d" else "2"]
        state["size"] = size // 2
    elif kind in ("flatten", "globalavgpool"):
        state["rank"] = 1
    elif kind == "dense":
        units = str(draw(st.integers(1, 16)))
        options = [("activation", draw(st.sampled_from(["relu", "sigmoid", "linear"])))]
        if draw(st.booleans()):
            positional = [units]
        else:
            options.append(("units", units))
    elif kind in ("lstm", "gru", "rnn"):
        positional = [str(draw(st.integers(1, 8)))]
        seq = draw(st.booleans())
        options = [("return_sequences", "true" if seq else "false")]
        if not seq:
            state["rank"] = 1
    elif kind == "dropout":
        positional = [draw(st.sampled_from(["0.5", "0.25", ".1"]))]
    options = draw(st.permutations(options)) if options else []
    name = [f"l{state['n']}:"] if draw(st.integers(0, 4)) == 0 else []
    state["n"] += 1
    return name + [kind] + positional + [f"{k}={v}" for k, v in options]


# blocks whose inside keeps any shape (so they fit anywhere), in every layout the grammar allows
SAFE = st.sampled_from(["relu", "tanh", "dropout 0.5", "sigmoid"])
MERGES = ["add", "concat", "multiply", "average", "maximum", "minimum", "subtract"]


@st.composite
def stack_items(draw, state: dict, depth: int, in_repeat: bool, least: int) -> list:
    """What goes inside a stack: layer texts and nested blocks (lists of lines)."""
    items = []
    for _ in range(draw(st.integers(least, 3))):
        if depth < 2 and draw(st.integers(0, 3)) == 0:
            items.append(draw(block_lines(state, depth + 1, in_repeat)))
        else:
            items.append(draw(SAFE))
    return items


def _brace_lines(draw, head: str, items: list, indent: str) -> list[str]:
    """`head {`, the items, `}`: across lines, or with the first item on the '{' line and the '}'
    on the last item's line, or all on one line; comments on the brace lines sometimes."""
    if not items:
        return [indent + head + draw(st.sampled_from([" { }", " {}", "{ }", " {\n" + indent + "}"]))]
    simple = all(isinstance(it, str) for it in items)
    if simple and len(items) == 1 and draw(st.booleans()):
        return [indent + f"{head} {{ {items[0]} }}"]
    inner = indent + draw(st.sampled_from(["  ", "    ", "\t", ""]))
    body: list[str] = []
    for it in items:
        if isinstance(it, str):
            body.append(inner + it)
        else:
            body.extend(inner + line for line in it)
        if draw(st.integers(0, 5)) == 0:
            body.append(draw(st.sampled_from(["", inner + draw(COMMENT)])))
    while body and not body[-1].strip():
        body.pop()
    open_comment = draw(SPACE) + draw(COMMENT) if draw(st.integers(0, 3)) == 0 else ""
    first = f"{indent}{head} {{"
    if isinstance(items[0], str) and not open_comment and draw(st.booleans()):
        first += " " + body.pop(0).strip()
    close = indent + "}" + (draw(SPACE) + draw(COMMENT) if draw(st.integers(0, 3)) == 0 else "")
    if body and "#" not in body[-1] and isinstance(items[-1], str) and draw(st.booleans()):
        return [first + open_comment] + body[:-1] + [body[-1] + " }"]
    if not body and "#" not in first and draw(st.booleans()):
        return [first + " }"]
    return [first + open_comment] + body + [close]


@st.composite
def block_lines(draw, state: dict, depth: int, in_repeat: bool) -> list[str]:
    # a concat widens the channels: inside a residual or a branch it would not match the other side
    kind = draw(st.sampled_from(["residual", "repeat"] + [m for m in MERGES if m != "concat" or not depth]))
    head = kind
    if kind == "repeat":
        head += f" {draw(st.integers(1, 3))}"
    if kind == "concat" and draw(st.booleans()):
        head += " axis=-1"
    if not in_repeat and draw(st.integers(0, 3)) == 0:
        state["n"] += 1
        head = f"b{state['n']}: " + head
    if kind in ("residual", "repeat"):
        items = draw(stack_items(state, depth, in_repeat or kind == "repeat", 1))
    else:
        items = []
        for _ in range(2 if kind == "subtract" else draw(st.integers(2, 3))):
            branch = draw(stack_items(state, depth, in_repeat, 0))
            items.append(_brace_lines(draw, "branch", branch, ""))
    return _brace_lines(draw, head, items, "")


@st.composite
def specs(draw) -> str:
    lines: list[str] = []

    def gap():
        for _ in range(draw(st.integers(0, 2))):
            lines.append(draw(st.sampled_from(["", "   ", draw(COMMENT), "  " + draw(COMMENT)])))

    gap()
    lines.append(draw(spaced(["model", "m"])))
    gap()
    kind = draw(st.sampled_from(["image", "series", "features"]))
    if kind == "image":
        size = draw(st.integers(1, 12))
        state = {"rank": 3, "size": size, "n": 0}
        lines.append(draw(spaced(["input", "x:", f"float32[{size},{size}, 1]"])))
    elif kind == "series":
        size = draw(st.integers(1, 12))
        state = {"rank": 2, "size": size, "n": 0}
        lines.append(draw(spaced(["input", "x", ":", f"float32[ {size}, 3 ]"])))
    else:
        state = {"rank": 1, "size": 1, "n": 0}
        lines.append(draw(spaced(["input", "x:", "float32[7]"])))
    for _ in range(draw(st.integers(1, 8))):
        gap()
        if draw(st.integers(0, 3)) == 0:
            lines.extend(draw(block_lines(state, 0, False)))
        else:
            lines.append(draw(spaced(draw(layer_tokens(state)))))
    if draw(st.booleans()):
        gap()
        lines.append(draw(spaced(["expect", "params", ">=", "0"])))
    if draw(st.booleans()):
        gap()
        items = draw(st.permutations([["epochs", "2"], ["batch_size", "16"], ["loss", "mse"],
                                      ["optimizer", "adam", "lr=1e-3", "beta_1=0.8"]]))
        items = items[: draw(st.integers(0, 4))]
        body = [draw(spaced(it)) for it in items]
        if body and draw(st.booleans()):
            lines.append("train {" + draw(SPACE) + body[0].lstrip())
            body = body[1:]
        else:
            lines.append(draw(spaced(["train", "{"])))
        for b in body:
            if draw(st.integers(0, 3)) == 0:
                lines.append(draw(st.sampled_from(["", "  " + draw(COMMENT)])))
            lines.append(b)
        if body and "#" not in lines[-1] and draw(st.booleans()):
            lines[-1] += " }"
        else:
            lines.append("}")
    gap()
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_generated_specs_format_idempotently_and_keep_their_meaning(text):
    assert check_source(text).ok, check_source(text).diagnostics  # the generator makes valid specs
    out = assert_formats_well(text)
    assert check_source(out).ok


def test_the_example_specs_are_in_canonical_layout():
    # the sample workflow runs `nnc fmt --check specs/`; it must pass on the repo's own specs
    for path in repo_specs():
        if "/specs/" not in str(path).replace(os.sep, "/"):
            continue
        text = open(path, encoding="utf-8").read()
        assert format_source(text)[0] == text, f"{path} is not formatted: run nnc fmt {path}"


def test_blocks_in_canonical_layout():
    """Written by hand: two spaces a level, '}' on its own line, `branch { }` for an empty branch,
    a branch of one layer (and no comment inside) on one line, comments where they were; the
    trailing comments of a run share a column, a block's lines included."""
    messy = (
        "model m\ninput x: float32[8, 8, 4]\n"
        "residual { conv2d 4 kernel=3 padding=same   # first\n"
        "     relu }  # the sum\n"
        "add {\n"
        "        branch {\n\n\n        }\n"
        "  branch {conv2d 4   kernel=1}\n"
        "  branch {\n    # a note\n    conv2d 4 kernel=1\n  }\n"
        "}\n"
        "s1:   repeat 2 {  # twice\n  add { branch { }\n  branch { relu\n  }\n }\n}\n"
    )
    want = (
        "model m\n\ninput x: float32[8, 8, 4]\n\n"
        "residual {\n  conv2d 4 kernel=3 padding=same  # first\n  relu\n}                                 # the sum\n"
        "add {\n  branch { }\n  branch { conv2d 4 kernel=1 }\n  branch {\n    # a note\n    conv2d 4 kernel=1\n  }\n}\n"
        "s1: repeat 2 {                    # twice\n  add {\n    branch { }\n    branch { relu }\n  }\n}\n"
    )
    assert format_source(messy)[0] == want
    assert assert_formats_well(messy) == want
    assert check_source(want).ok
