"""`nnc lsp` on the command line: only that command imports pygls."""

from __future__ import annotations

import pathlib
import subprocess
import sys

SPEC = pathlib.Path(__file__).resolve().parents[2] / "specs" / "mnist_convnet.nnspec"


def test_check_does_not_import_the_language_server():
    code = ("import sys; from nnc.cli import main; rc = main(['check', sys.argv[1]]); "
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('pygls', 'lsprotocol', 'cattrs')))")
    r = subprocess.run([sys.executable, "-c", code, str(SPEC)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "0 []"


def test_lsp_help():
    r = subprocess.run([sys.executable, "-m", "nnc", "lsp", "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: nnc lsp") and "inlayHints" in r.stdout
