"""Shared helpers of the CI-facing tests (report formats, fmt, graph, pre-commit files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture
def in_cases(monkeypatch):
    """Run from the cases directory, so paths in the output are the short relative ones."""
    monkeypatch.chdir(CASES)
    return CASES


def repo_specs() -> list[Path]:
    """Every spec the repository carries: specs/ and the contract copies in tests/data."""
    found = sorted((REPO / "specs").glob("**/*.nnspec")) + sorted((REPO / "tests" / "data").glob("**/*.nnspec"))
    shared = REPO.parent / "shared" / "contract"
    if not found and shared.is_dir():  # pragma: no cover - a checkout without its copies
        found = sorted(shared.glob("*.nnspec"))
    return [p for p in found if os.path.getsize(p) < 1_000_000]
