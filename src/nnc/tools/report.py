"""Diagnostics of many files in one of the output formats `nnc check --format` offers.

Every format starts from the same Diagnostic objects (nnc.lang.diagnostics):
- text: what a person reads, `FILE:LINE:COL: error: MESSAGE [code]`, the source line and a
  caret line, and a closing count;
- json: a list of diagnostics (file, line, column, end_line, end_column, severity, code,
  message, help);
- github: GitHub Actions workflow commands, so each diagnostic becomes an annotation on the
  pull request's diff;
- sarif: SARIF 2.1.0, the format code-scanning dashboards read.

This module is imported by `nnc check`, so it stays light: the standard library only.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote

from nnc import __version__
from nnc.lang.diagnostics import CODES, Diagnostic, render, source_lines
from nnc.lang.model import CheckResult

FORMATS = ("text", "json", "github", "sarif")

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

CHECK_SCHEMA_VERSION = 1
"""The version of the json format's schema (`nnc schema check`), in every diagnostic it lists."""


def format_results(results: list[CheckResult], fmt: str, color: bool = False) -> str:
    return FORMATTERS[fmt](results, color)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def closing_count(results: list[CheckResult]) -> str:
    """`2 errors, 1 warning in 3 files`, or `3 files checked: no problems`."""
    errors = sum(len(r.errors) for r in results)
    warnings = sum(len(r.warnings) for r in results)
    files = _plural(len(results), "file")
    if errors or warnings:
        return f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')} in {files}"
    return f"{files} checked: no problems"


def _diagnostics(results: list[CheckResult]) -> list[tuple[CheckResult, Diagnostic]]:
    return [(r, d) for r in results for d in r.diagnostics]


def _text(results: list[CheckResult], color: bool) -> str:
    blocks = [render(d, r.source, color=color) for r, d in _diagnostics(results)]
    return "\n\n".join(blocks + [closing_count(results)])


def _json(results: list[CheckResult], color: bool) -> str:
    # a list, as it always was; each diagnostic names its schema's version (`nnc schema check`)
    return json.dumps([{**d.to_dict(), "schema_version": CHECK_SCHEMA_VERSION} for _, d in _diagnostics(results)],
                      indent=2)


# --- GitHub Actions workflow commands ---------------------------------------------------------


def github_escape_data(s: str) -> str:
    """The message part of a workflow command: %, CR and LF are percent-encoded."""
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_escape_property(s: str) -> str:
    """A property value (file=..., title=...): as data, plus ':' and ','."""
    return github_escape_data(s).replace(":", "%3A").replace(",", "%2C")


def github_command(d: Diagnostic) -> str:
    """`::error file=F,line=L,col=C,endLine=..,endColumn=..,title=CODE::message`."""
    level = "error" if d.is_error else "warning"
    s = d.span
    props = [("file", d.file), ("line", s.line), ("col", s.col), ("endLine", s.end_line),
             ("endColumn", s.end_col), ("title", d.code)]
    message = d.message + (f"\nhelp: {d.help}" if d.help else "")
    head = ",".join(f"{k}={github_escape_property(str(v))}" for k, v in props)
    return f"::{level} {head}::{github_escape_data(message)}"


def _github(results: list[CheckResult], color: bool) -> str:
    lines = [github_command(d) for _, d in _diagnostics(results)]
    return "\n".join(lines + [closing_count(results)])


# --- SARIF 2.1.0 ------------------------------------------------------------------------------


def _artifact_location(path: str) -> dict:
    """A URI for the file: relative paths stay relative to the checkout (%SRCROOT%), as
    code scanning wants them; absolute paths become file:// URIs."""
    if os.path.isabs(path):
        from pathlib import Path

        return {"uri": Path(path).as_uri()}
    rel = path.replace(os.sep, "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return {"uri": quote(rel, safe="/"), "uriBaseId": "%SRCROOT%"}


def sarif_log(results: list[CheckResult]) -> dict:
    """The SARIF 2.1.0 log of a run: one run, nnc as the tool with every registered code as
    a rule, one result per diagnostic."""
    rule_ids = list(CODES)
    rules = [
        {
            "id": c.name,
            "name": "".join(part.capitalize() for part in c.name.split("-")),
            "shortDescription": {"text": c.summary},
            "defaultConfiguration": {"level": c.severity},
        }
        for c in CODES.values()
    ]
    out = []
    for r, d in _diagnostics(results):
        s = d.span
        line, col = max(s.line, 1), max(s.col, 1)
        end_line = max(s.end_line, line)
        end_col = max(s.end_col, col) if end_line == line else max(s.end_col, 1)
        text = d.message + (f"\nhelp: {d.help}" if d.help else "")
        result = {
            "ruleId": d.code,
            "ruleIndex": rule_ids.index(d.code),
            "level": "error" if d.is_error else "warning",
            "message": {"text": text},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": _artifact_location(d.file),
                    "region": {"startLine": line, "startColumn": col, "endLine": end_line, "endColumn": end_col},
                }
            }],
        }
        lines = source_lines(r.source)  # split once per file, not once per result
        if 1 <= line <= len(lines):
            result["locations"][0]["physicalLocation"]["region"]["snippet"] = {"text": lines[line - 1]}
        out.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "nnc", "version": __version__, "rules": rules}},
            # lark counts columns in characters, not UTF-16 code units (SARIF's default)
            "columnKind": "unicodeCodePoints",
            "originalUriBaseIds": {"%SRCROOT%": {"description": {"text": "the directory nnc ran in"}}},
            "results": out,
        }],
    }


def _sarif(results: list[CheckResult], color: bool) -> str:
    return json.dumps(sarif_log(results), indent=2)


FORMATTERS = {"text": _text, "json": _json, "github": _github, "sarif": _sarif}
