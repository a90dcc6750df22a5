"""Golden tests of rendered diagnostics, mypy style: each tests/checker/golden/NAME.nnspec holds
one mistake (or a few), and NAME.expected the exact text `nnc check` prints for it.

Every spec also states, by hand, where its diagnostics must be, in lines of the form
`#! LINE:COL SEVERITY CODE`; those annotations are checked against the diagnostics on their
own, so a golden file regenerated from a wrong checker still fails. To regenerate the
.expected files after an intended change of wording, run
`NNC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/checker/test_checker_golden.py` and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from nnc import check_source, render
from nnc.lang.diagnostics import CODES, Diagnostic, Span, caret_line

GOLDEN = Path(__file__).parent / "golden"
SPECS = sorted(GOLDEN.glob("*.nnspec"))
ANNOTATION = re.compile(r"^#! (\d+):(\d+) (error|warning) ([a-z-]+)$", re.M)


def rendered(path: Path) -> tuple[str, list[Diagnostic]]:
    text = path.read_text()
    result = check_source(text, path.name)
    return "\n\n".join(render(d, text) for d in result.diagnostics) + "\n", result.diagnostics


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_diagnostics_are_where_the_spec_says(path: Path):
    want = [(int(l), int(c), sev, code) for l, c, sev, code in ANNOTATION.findall(path.read_text())]
    assert want, f"{path.name} has no #! annotations"
    _, diags = rendered(path)
    got = [(d.span.line, d.span.col, d.severity, d.code) for d in diags]
    assert got == want


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_rendered_text_matches_golden(path: Path):
    text, _ = rendered(path)
    expected = path.with_suffix(".expected")
    if os.environ.get("NNC_UPDATE_GOLDEN"):
        expected.write_text(text)
    assert expected.exists(), f"missing {expected.name}; run with NNC_UPDATE_GOLDEN=1 and review it"
    assert text == expected.read_text()


def test_golden_cases_cover_many_distinct_mistakes():
    codes = {m[3] for p in SPECS for m in ANNOTATION.findall(p.read_text())}
    assert len(SPECS) >= 20
    every_warning = {c.name for c in CODES.values() if c.severity == "warning"} - {"no-layers"}
    assert every_warning <= codes, f"warnings without a golden case: {every_warning - codes}"
    assert len(codes) >= 20, codes


def test_all_errors_in_one_run_sorted_by_position():
    _, diags = rendered(GOLDEN / "many_errors_sorted.nnspec")
    positions = [(d.span.line, d.span.col) for d in diags]
    assert positions == sorted(positions) and len(positions) == 4


def test_syntax_errors_speak_in_words_not_terminals():
    """lark's terminal names (NAME, _NL, LSQB, ...) never reach a user."""
    for path in SPECS:
        for d in (d for d in rendered(path)[1] if d.code == "syntax"):
            assert not re.search(r"\b(NAME|_NL|LSQB|RSQB|LPAR|INT|FLOAT|SIZE|COMPARE|\$END)\b", d.message), d.message


# --- render() on its own --------------------------------------------------------------------


def diag(span: Span, code: str = "bad-value", help: str | None = None) -> Diagnostic:
    return Diagnostic(code, "the message", span, help=help, file="f.nnspec")


def test_render_head_source_caret_help():
    src = "model m\ndense 10 activation=rleu\n"
    out = render(diag(Span(2, 21, 2, 25), help="try relu"), src)
    assert out.splitlines() == [
        "f.nnspec:2:21: error: the message [bad-value]",
        "dense 10 activation=rleu",
        "                    ^^^^",
        "help: try relu",
    ]


def test_render_warning_and_no_help():
    out = render(diag(Span(1, 1, 1, 6), code="dropout-last"), "dense 1\n")
    assert out.splitlines() == ["f.nnspec:1:1: warning: the message [dropout-last]", "dense 1", "^^^^^"]


def test_render_point_at_end_of_line_is_one_caret():
    out = render(diag(Span.point(1, 12), code="syntax"), "activation=\n")
    assert out.splitlines()[2] == " " * 11 + "^"


def test_render_line_outside_the_source_prints_only_the_head():
    assert render(diag(Span(9, 1, 9, 2)), "one line\n") == "f.nnspec:9:1: error: the message [bad-value]"
    assert render(diag(Span(1, 1, 1, 2)), None) == "f.nnspec:1:1: error: the message [bad-value]"


def test_caret_line_keeps_tabs_so_carets_line_up():
    assert caret_line("\tdense\t10", Span(1, 8, 1, 10)) == "\t     \t^^"


def test_caret_line_multi_line_span_runs_to_end_of_text():
    assert caret_line("train {   ", Span(1, 1, 3, 2)) == "^^^^^^^"


def test_render_color_marks_only_the_severity():
    out = render(diag(Span(1, 1, 1, 2)), "x\n", color=True)
    assert out.startswith("f.nnspec:1:1: \x1b[1;31merror\x1b[0m: the message [bad-value]")


def test_unregistered_code_is_a_programming_error():
    with pytest.raises(KeyError):
        Diagnostic("no-such-code", "m", Span(1, 1, 1, 2))
