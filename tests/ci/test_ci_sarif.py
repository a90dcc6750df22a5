"""`nnc check --format sarif` validates against the SARIF 2.1.0 schema (kept in data/) and
carries every diagnostic to the place written down by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci_helpers import CASES, GOLDEN, run_nnc

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))


def validate(log: dict) -> None:
    validator = jsonschema.Draft4Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_the_schema_is_sarif_2_1_0():
    assert SCHEMA["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    jsonschema.Draft4Validator.check_schema(SCHEMA)


def test_every_golden_case_in_one_run_validates_and_is_located(capsys, in_cases):
    names = sorted(GOLDEN)
    rc, out, _ = run_nnc(capsys, "check", "--format", "sarif", *names)
    assert rc == 1
    log = json.loads(out)
    validate(log)
    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    located = set()
    for res in run["results"]:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        loc = res["locations"][0]["physicalLocation"]
        region = loc["region"]
        uri = loc["artifactLocation"]["uri"]
        located.add((res["level"], uri, region["startLine"], region["startColumn"], res["ruleId"]))
        # the snippet is the source line the region starts on
        src = (CASES / _unquote(uri)).read_text().splitlines()
        assert region["snippet"]["text"] == src[region["startLine"] - 1]
    for name in names:
        for sev, line, col, code in GOLDEN[name]:
            from urllib.parse import quote

            assert (sev, quote(name), line, col, code) in located, (name, line, col, code)
    _, js, _ = run_nnc(capsys, "check", "--format", "json", *names)
    assert len(run["results"]) == len(json.loads(js))


def _unquote(uri: str) -> str:
    from urllib.parse import unquote

    return unquote(uri)


def test_clean_specs_give_a_valid_log_with_no_results(capsys, in_cases):
    from ci_helpers import repo_specs

    specs = [str(p) for p in repo_specs()]
    assert specs
    rc, out, _ = run_nnc(capsys, "check", "--format", "sarif", *specs)
    log = json.loads(out)
    validate(log)
    assert rc == 0 and log["runs"][0]["results"] == []
    # absolute paths become file:// URIs, which the schema's uri format accepts
    assert all(p.startswith("/") for p in specs)


def test_io_errors_and_budgets_validate(capsys, in_cases, tmp_path):
    spec = tmp_path / "big.nnspec"
    spec.write_text("model big\ninput x: float32[100]\ndense 100\n")
    rc, out, _ = run_nnc(capsys, "check", "--format", "sarif", "--max-params", "1000", str(spec), "missing.nnspec")
    assert rc == 2  # an unreadable file is an I/O error, whatever else was found
    log = json.loads(out)
    validate(log)
    got = {(r["ruleId"], r["level"]) for r in log["runs"][0]["results"]}
    assert got == {("param-budget", "error"), ("io", "error")}
    budget = next(r for r in log["runs"][0]["results"] if r["ruleId"] == "param-budget")
    assert "10,100 parameters" in budget["message"]["text"]
    assert budget["locations"][0]["physicalLocation"]["region"]["startLine"] == 1


def test_the_validator_rejects_a_broken_log(capsys, in_cases):
    _, out, _ = run_nnc(capsys, "check", "--format", "sarif", "shapes.nnspec")
    log = json.loads(out)
    log["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(AssertionError):
        validate(log)
