"""The checker's golden cases (tests/checker/golden: each spec lists, in `#! LINE:COL
SEVERITY CODE` lines written by hand, where its diagnostics must be) through every report
format: json, github and sarif each locate every one of them. And `nnc fmt` keeps the
meaning of each case that parses, and refuses each that does not."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

import pytest

from ci_helpers import REPO, assert_formats_well, parse_github, run_nnc

GOLDEN_DIR = REPO / "tests" / "checker" / "golden"
CASES = sorted(GOLDEN_DIR.glob("*.nnspec"))
MARK = re.compile(r"#!\s*(\d+):(\d+)\s+(error|warning)\s+([\w-]+)")


def expected(path) -> set[tuple]:
    return {(m[3], int(m[1]), int(m[2]), m[4]) for m in MARK.finditer(path.read_text(encoding="utf-8"))}


def test_the_golden_cases_are_there():
    assert len([c for c in CASES if expected(c)]) >= 10


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_every_format_locates_every_golden_diagnostic(capsys, monkeypatch, path):
    want = expected(path)
    monkeypatch.chdir(GOLDEN_DIR)
    name = path.name
    _, js, _ = run_nnc(capsys, "check", "--format", "json", name)
    got_json = {(d["severity"], d["line"], d["column"], d["code"]) for d in json.loads(js)}
    _, gh, _ = run_nnc(capsys, "check", "--format", "github", name)
    got_github = {(g["severity"], int(g["line"]), int(g["col"]), g["title"]) for g in parse_github(gh)}
    _, sf, _ = run_nnc(capsys, "check", "--format", "sarif", name)
    results = json.loads(sf)["runs"][0]["results"]
    got_sarif = set()
    for r in results:
        loc = r["locations"][0]["physicalLocation"]
        assert unquote(loc["artifactLocation"]["uri"]) == name
        got_sarif.add((r["level"], loc["region"]["startLine"], loc["region"]["startColumn"], r["ruleId"]))
    assert want <= got_json, want - got_json
    assert got_github == got_json and got_sarif == got_json


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_fmt_keeps_the_meaning_of_each_golden_case(path):
    from nnc.lang.fmt import format_source
    from nnc.lang.parser import parse

    text = path.read_text(encoding="utf-8")
    if parse(text).syntax_errors:
        assert format_source(text)[0] is None
    else:
        assert_formats_well(text)
