"""Shared helpers of the CI-facing tests (report formats, fmt, graph, pre-commit files).

A module with a unique name (not conftest), so that imports never pick up another folder's conftest."""

from __future__ import annotations

import os
import re
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent.parent
CASES = HERE / "data" / "cases"

# Hand-written from reading each case (line, column, code): where each diagnostic must be.
GOLDEN = {
    "options.nnspec": [("error", 6, 7, "bad-value"), ("error", 6, 20, "bad-value"), ("error", 7, 9, "unknown-option")],
    "shapes.nnspec": [("error", 7, 10, "does-not-fit")],
    "syntax.nnspec": [("error", 3, 20, "syntax"), ("error", 4, 9, "syntax")],
    "warnings.nnspec": [("warning", 7, 1, "activation-after-softmax"), ("warning", 8, 1, "dropout-last")],
    "with space,comma.nnspec": [("error", 3, 9, "unknown-option")],
    "expect.nnspec": [("error", 4, 1, "expect-failed"), ("error", 5, 1, "expect-failed")],
}


def run_nnc(capsys, *argv: str) -> tuple[int, str, str]:
    from nnc.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def repo_specs() -> list[Path]:
    """Every spec the repository carries: specs/ and the contract copies in tests/data."""
    found = sorted((REPO / "specs").glob("**/*.nnspec")) + sorted((REPO / "tests" / "data").glob("**/*.nnspec"))
    shared = REPO.parent / "shared" / "contract"
    if not found and shared.is_dir():  # pragma: no cover - a checkout without its copies
        found = sorted(shared.glob("*.nnspec"))
    return [p for p in found if os.path.getsize(p) < 1_000_000]


GITHUB_LINE = re.compile(r"^::(error|warning) (?P<props>[^:]*)::(?P<msg>.*)$")


def unescape_data(s: str) -> str:
    # GitHub's runner decodes these three in the message; %25 last so "%250A" stays "%0A"
    return s.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def unescape_property(s: str) -> str:
    return unescape_data(s.replace("%3A", ":").replace("%2C", ","))


def parse_github(out: str) -> list[dict]:
    """A reader of workflow commands written from GitHub's documented rules, not from nnc."""
    found = []
    for line in out.splitlines():
        m = GITHUB_LINE.match(line)
        if not m:
            continue
        props = dict(p.split("=", 1) for p in m["props"].split(","))
        props = {k: unescape_property(v) for k, v in props.items()}
        found.append({"severity": m[1], **props, "message": unescape_data(m["msg"])})
    return found


def meaning(text: str):
    from nnc.lang.checker import check_source

    """What a spec means, positions left out: the checked model and the diagnostics' codes."""
    r = check_source(text, "spec.nnspec")
    diags = sorted((d.code, d.severity) for d in r.diagnostics)
    m = r.model
    if m is None:
        return None, diags
    layers = [(l.name, l.kind, l.options, l.input_shape, l.output_shape, l.input_dtype, l.weights) for l in m.layers]
    return (m.name, m.input, layers, m.train, m.total_params), diags


def comments(text: str) -> list[str]:
    from nnc.lang.fmt import split_comment

    return [c for c in (split_comment(line)[1] for line in text.splitlines()) if c]


def assert_formats_well(text: str) -> str:
    from nnc.lang.fmt import format_source

    out, errors = format_source(text)
    assert errors == [] and out is not None
    assert meaning(out) == meaning(text)
    assert format_source(out)[0] == out, "fmt is not idempotent"
    assert comments(out) == comments(text), "a comment was lost or moved out of order"
    assert out == "" or (out.endswith("\n") and not out.endswith("\n\n"))
    assert all(line == line.rstrip() for line in out.splitlines())
    assert "\n\n\n" not in out
    return out
