"""Diagnostics of many files in one of the output formats `nnc check --format` offers."""

from __future__ import annotations

import json

from .diagnostics import render
from .model import CheckResult

FORMATS = ("text", "json")


def format_results(results: list[CheckResult], fmt: str, color: bool = False) -> str:
    return FORMATTERS[fmt](results, color)


def _text(results: list[CheckResult], color: bool) -> str:
    blocks = [render(d, r.source, color=color) for r in results for d in r.diagnostics]
    errors = sum(len(r.errors) for r in results)
    warnings = sum(len(r.warnings) for r in results)
    n = len(results)
    files = f"{n} file{'s' if n != 1 else ''}"
    if errors or warnings:
        tail = (f"{errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''} "
                f"in {files}")
    else:
        tail = f"{files} checked: no problems"
    return "\n\n".join(blocks + [tail]) if blocks else tail


def _json(results: list[CheckResult], color: bool) -> str:
    return json.dumps([d.to_dict() for r in results for d in r.diagnostics], indent=2)


FORMATTERS = {"text": _text, "json": _json}
