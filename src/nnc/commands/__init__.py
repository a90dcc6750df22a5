"""The commands of the `nnc` CLI, one module each (see nnc.cli)."""

from __future__ import annotations

import sys


def checked_model(result):
    """The model of a checked spec, for the commands that go on to use it (summary, compile,
    train, eval, graph). Its diagnostics go to stderr, warnings included; a spec with errors
    stops the command with exit 1 (2 when the file could not be read), as `nnc check` would."""
    from nnc.lang.diagnostics import render
    from nnc.lang.errors import Reported

    if result.diagnostics:
        print("\n\n".join(render(d, result.source) for d in result.diagnostics) + "\n", file=sys.stderr)
    if not result.ok:
        raise Reported(2 if any(d.code == "io" for d in result.diagnostics) else 1)
    return result.model
