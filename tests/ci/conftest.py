"""Fixtures of the CI-facing tests; the helpers live in ci_helpers.py."""

from __future__ import annotations

import pytest

from ci_helpers import CASES


@pytest.fixture
def in_cases(monkeypatch):
    """Run from the cases directory, so paths in the output are the short relative ones."""
    monkeypatch.chdir(CASES)
    return CASES
