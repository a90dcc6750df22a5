"""Property-based fuzzing of the checker: random mutations of valid specs (characters, tokens,
lines, numbers) must each end in a clean pass or in error diagnostics (exit 1), never in an
exception or a hang. Parsing is LALR (linear) and the parser's error recovery reports one error
per round and stops after MAX_SYNTAX_ERRORS, so every example terminates; no wall-clock limit
is needed to show it.

About 3,000 examples in all; `--hypothesis-seed` reproduces a failure.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnc import check_source, render
from nnc.lang.kinds import KINDS
from nnc.tools.summary import to_json, to_text

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted({p.read_text() for d in ("tests/data/contract", "specs") for p in (ROOT / d).glob("*.nnspec")})
assert len(SEEDS) >= 5
BLOCK_SEEDS = [
    "model r\ninput x: float32[12, 12, 3]\nconv2d 8 kernel=3 padding=same\n"
    "residual {\n  conv2d 8 kernel=3 padding=same activation=relu\n  conv2d 8 kernel=3 padding=same\n}\n"
    "add {\n  branch { conv2d 16 kernel=1 stride=2 }\n  branch {\n    conv2d 16 kernel=3 stride=2 padding=same\n  }\n}\n"
    "concat axis=-1 {\n  branch { }\n  branch { conv2d 4 kernel=1 }\n}\nglobalavgpool\ndense 10 activation=softmax\n",
    "model s\ninput t: int64[20] vocab=100\nembedding 16\nstage: repeat 2 {\n  residual { dense 16 activation=relu\n"
    "             dropout 0.1 }\n}\nsubtract {\n  branch { dense 16 }\n  branch { }\n}\n"
    "average {\n  branch { lstm 8 }\n  branch { gru 8 }\n}\ndense 2 activation=softmax\n"
    "expect output == [2]\ntrain {\n  loss sparse_categorical_crossentropy\n}\n",
    "model n\ninput x: float32[6]\nmaximum {\n  branch { multiply {\n    branch { dense 6 }\n    branch { }\n  } }\n"
    "  branch { minimum {\n    branch { }\n    branch { relu }\n  } }\n}\nrepeat 3 { dense 6 }\n",
]
SEEDS = sorted(SEEDS + BLOCK_SEEDS)

WORDS = sorted(KINDS) + [
    "model", "input", "expect", "train", "params", "output", "float32", "int64", "vocab=100", "kernel=3",
    "stride=2", "padding=same", "padding=valid", "activation=relu", "activation=softmax", "use_bias=false",
    "return_sequences=true", "reset_after=false", "pool_size=2", "units=4", "loss", "optimizer", "sgd", "adam",
    "lr=0.1", "epochs", "batch_size", "=", "==", "<=", ":", "[", "]", "(", ")", "{", "}", ",", "#", "3x5", "0",
    "-1", "1e-3", "0.5", "true", "x:", "[10]", "[28, 28, 1]", '"relu"', "\t", "\n", "\r\n",
    "residual {", "add {", "concat {", "subtract {", "repeat 2 {", "repeat", "branch {", "branch { }", "{ }",
    "} }", "axis=2", "s1:",
]
CHARS = st.sampled_from(list("abcxyz0189 _=:[](){},.#-+\"'\t\n\r$@\\\x00é✓"))
NUMBER = re.compile(r"\d+")
TOKEN = re.compile(r"\S+")

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutants(draw) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["del_chars", "ins_char", "rep_char", "del_token", "ins_token", "rep_token",
                                   "number", "del_line", "dup_line", "swap_lines"]))
        lines = text.split("\n")
        if op in ("del_chars", "ins_char", "rep_char"):
            i = draw(st.integers(0, len(text)))
            if op == "del_chars":
                text = text[:i] + text[i + draw(st.integers(1, 8)):]
            else:
                text = text[:i] + draw(CHARS) + text[i + (op == "rep_char"):]
        elif op in ("del_token", "ins_token", "rep_token"):
            toks = list(TOKEN.finditer(text))
            if not toks:
                continue
            m = toks[draw(st.integers(0, len(toks) - 1))]
            word = draw(st.sampled_from(WORDS))
            if op == "del_token":
                text = text[:m.start()] + text[m.end():]
            elif op == "ins_token":
                text = text[:m.end()] + " " + word + text[m.end():]
            else:
                text = text[:m.start()] + word + text[m.end():]
        elif op == "number":
            nums = list(NUMBER.finditer(text))
            if not nums:
                continue
            m = nums[draw(st.integers(0, len(nums) - 1))]
            new = draw(st.one_of(st.integers(0, 3), st.integers(-5, 100_000), st.integers(10**12, 10**40)))
            text = text[:m.start()] + str(new) + text[m.end():]
        else:
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if op == "del_line":
                del lines[i]
            elif op == "dup_line":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


def assert_well_formed(text: str) -> None:
    result = check_source(text, "fuzz.nnspec")  # must not raise
    errors = [d for d in result.diagnostics if d.is_error]
    assert result.ok == (not errors)
    assert (result.model is None) == bool(errors)
    n_lines = len(text.splitlines()) + 1
    for d in result.diagnostics:
        assert 1 <= d.span.line <= max(n_lines, 1), d
        assert d.span.col >= 1, d
        out = render(d, text)
        assert out.startswith(f"fuzz.nnspec:{d.span.line}:{d.span.col}: {d.severity}: ")
        assert "Traceback" not in out
    positions = [(d.span.line, d.span.col) for d in result.diagnostics]
    assert positions == sorted(positions)
    if result.model is not None:
        model = result.model
        assert isinstance(model.total_params, int) and model.total_params >= 0
        assert all(d >= 1 for layer in model.layers for d in layer.output_shape)
        to_text(model)
        assert to_json(model)["total_params"] == model.total_params


@settings(max_examples=1500, **SETTINGS)
@given(mutants())
def test_mutants_of_valid_specs_end_in_diagnostics_or_a_clean_pass(text):
    assert_well_formed(text)


@settings(max_examples=600, **SETTINGS)
@given(st.lists(st.sampled_from(WORDS + ["\n"] * 8), max_size=40).map(" ".join))
def test_random_token_soup(text):
    assert_well_formed(text)


@settings(max_examples=600, **SETTINGS)
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    assert_well_formed(text)


@settings(max_examples=300, **SETTINGS)
@given(st.sampled_from(SEEDS), st.integers(0, 40), st.sampled_from(["$", "dense 8 =", "train {", "}", "expect =", "[,"]))
def test_many_broken_lines_stop_at_the_error_limit(text, n, junk):
    """A junk line after every line: one error a line, at most MAX_SYNTAX_ERRORS of them."""
    from nnc.lang.parser import MAX_SYNTAX_ERRORS

    lines = text.split("\n")
    broken = "\n".join(line + "\n" + junk if i < n else line for i, line in enumerate(lines))
    assert_well_formed(broken)
    assert len(check_source(broken).errors) <= MAX_SYNTAX_ERRORS + len(lines)


@st.composite
def block_soup(draw) -> str:
    """Random nesting of blocks, branches and layers, with braces dropped or added at random."""
    def stack(depth: int) -> list[str]:
        out = []
        for _ in range(draw(st.integers(0, 3))):
            if depth < 4 and draw(st.booleans()):
                kind = draw(st.sampled_from(["residual", "add", "concat", "subtract", "repeat 2", "branch",
                                             "average", "x: repeat 0", "dense 3", "maximum axis=1"]))
                inner = stack(depth + 1)
                if draw(st.booleans()):
                    out.append(kind + " { " + " ".join(inner).replace("\n", " ") + " }")
                else:
                    out += [kind + " {"] + ["  " + line for line in inner] + ["}"]
            else:
                out.append(draw(st.sampled_from(["dense 4", "relu", "conv2d 4 kernel=3", "dropout 0.5", "flatten",
                                                 "conv2d 4 kernel=1 stride=2", "a: relu", "globalavgpool"])))
        return out

    lines = ["model m", draw(st.sampled_from(["input x: float32[8, 8, 3]", "input x: float32[6]",
                                              "input t: int64[5] vocab=9"]))] + stack(0)
    text = "\n".join(lines)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["{", "}", "\n", "del"]))
        text = text[:i] + text[i + 1:] if op == "del" else text[:i] + op + text[i:]
    return text


@settings(max_examples=500, **SETTINGS)
@given(st.one_of(block_soup(), st.sampled_from(BLOCK_SEEDS), mutants()))
def test_random_blocks_end_in_diagnostics_or_a_clean_pass(text):
    """Blocks nested at random, braces added and dropped: diagnostics or a model, never an
    exception; and what formats, formats idempotently."""
    from nnc.lang.fmt import format_source
    from nnc.tools.graph import to_dot

    assert_well_formed(text)
    result = check_source(text)
    if result.model is not None:
        to_dot(result.model)
        assert len(result.model.layers) == len({layer.name for layer in result.model.layers})
    out, errors = format_source(text)
    assert (out is None) == bool(errors)
    if out is not None:
        assert format_source(out)[0] == out


def test_cli_on_mutants_exits_0_or_1_without_traceback(tmp_path):
    rng = random.Random(1234)
    specs = []
    for k in range(8):
        text = rng.choice(SEEDS)
        for _ in range(k % 4):
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice("$=[:}\n9x ") + text[i + rng.randint(0, 3):]
        path = tmp_path / f"m{k}.nnspec"
        path.write_text(text)
        specs.append(path)
    env = {**os.environ, "NNC_DEBUG": ""}
    for k, path in enumerate(specs):
        for cmd in (["check"], ["summary"]) if k % 2 else (["check", "--format", "json"],):
            proc = subprocess.run([sys.executable, "-m", "nnc.cli", *cmd, str(path)], capture_output=True, text=True,
                                  env=env)
            assert proc.returncode in (0, 1), (cmd, path.read_text(), proc.stderr)
            assert "Traceback" not in proc.stderr + proc.stdout
            assert "internal error" not in proc.stderr
            expected = 0 if check_source(path.read_text()).ok else 1
            assert proc.returncode == expected
