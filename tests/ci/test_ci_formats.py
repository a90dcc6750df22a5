"""`nnc check --format json|github`: every diagnostic of the golden cases can be parsed back
and lands at the line, column and code written down by hand in ci_helpers.GOLDEN."""

from __future__ import annotations

import json

import pytest

from ci_helpers import CASES, GOLDEN, parse_github, run_nnc

@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_github_format_locates_every_golden_diagnostic(capsys, in_cases, name):
    rc, out, _ = run_nnc(capsys, "check", "--format", "github", name)
    got = parse_github(out)
    located = {(g["severity"], int(g["line"]), int(g["col"]), g["title"]) for g in got}
    for want in GOLDEN[name]:
        assert want in located, f"{name}: {want} not among {sorted(located)}"
    assert all(g["file"] == name for g in got)
    # one workflow command per diagnostic, nothing lost, nothing invented
    _, js, _ = run_nnc(capsys, "check", "--format", "json", name)
    assert len(got) == len(json.loads(js))
    assert rc == (1 if any(sev == "error" for sev, *_ in GOLDEN[name]) else 0)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_json_format_locates_every_golden_diagnostic(capsys, in_cases, name):
    rc, out, _ = run_nnc(capsys, "check", "--format", "json", name)
    diags = json.loads(out)
    assert isinstance(diags, list)
    for d in diags:
        assert set(d) == {"file", "line", "column", "end_line", "end_column", "severity", "code", "message", "help",
                          "schema_version"}
        assert d["file"] == name
        assert (d["end_line"], d["end_column"]) >= (d["line"], d["column"])
    located = {(d["severity"], d["line"], d["column"], d["code"]) for d in diags}
    for want in GOLDEN[name]:
        assert want in located, f"{name}: {want} not among {sorted(located)}"


def test_json_end_positions_cover_the_offending_text(capsys, in_cases):
    _, out, _ = run_nnc(capsys, "check", "--format", "json", "options.nnspec")
    lines = (CASES / "options.nnspec").read_text().splitlines()
    spans = {lines[d["line"] - 1][d["column"] - 1:d["end_column"] - 1] for d in json.loads(out)}
    assert spans == {"0", "relux", "activaton"}


def test_github_escapes_by_githubs_rules():
    from nnc.tools.report import github_escape_data, github_escape_property

    assert github_escape_data("100% sure\r\nnext") == "100%25 sure%0D%0Anext"
    assert github_escape_property("a:b,c%d\n") == "a%3Ab%2Cc%25d%0A"
    # a message keeps ':' and ',' (only properties escape them)
    assert github_escape_data("x: y, z") == "x: y, z"


def test_github_file_names_with_commas_survive_the_round_trip(capsys, in_cases):
    _, out, _ = run_nnc(capsys, "check", "--format", "github", "with space,comma.nnspec")
    cmd = next(line for line in out.splitlines() if line.startswith("::"))
    assert "file=with space%2Ccomma.nnspec," in cmd
    assert parse_github(out)[0]["file"] == "with space,comma.nnspec"


def test_github_help_travels_in_the_message_as_a_second_line(capsys, in_cases):
    _, out, _ = run_nnc(capsys, "check", "--format", "github", "options.nnspec")
    msgs = [g["message"] for g in parse_github(out)]
    assert any(m.startswith("dense has no option 'activaton'") and "\nhelp: dense takes:" in m for m in msgs)
    assert all("\n" not in line for line in out.splitlines())  # one command a line


def test_github_warnings_are_warning_commands(capsys, in_cases):
    rc, out, _ = run_nnc(capsys, "check", "--format", "github", "warnings.nnspec")
    assert rc == 0
    assert {g["severity"] for g in parse_github(out)} == {"warning"}
    rc, out, _ = run_nnc(capsys, "check", "--format", "github", "--warnings-as-errors", "warnings.nnspec")
    assert rc == 1
    assert {g["severity"] for g in parse_github(out)} == {"error"}
