"""nnc summary"""

from __future__ import annotations

import json

HELP = """Print a Keras-like table of a spec: each layer's name, kind, output shape and
parameters, plus multiply-accumulates and activation memory per sample, with totals.
`--format json` gives the same as data."""
EXAMPLE = "nnc summary specs/mnist_convnet.nnspec --format json"


def add_arguments(p):
    p.add_argument("file", metavar="FILE", help="the .nnspec file")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")


def main(args) -> int:
    from ..checker import check_file
    from ..diagnostics import render
    from ..summary import to_json, to_text

    r = check_file(args.file)
    if not r.ok:
        import sys

        for d in r.diagnostics:
            print(render(d, r.source), file=sys.stderr)
        return 2 if any(d.code == "io" for d in r.diagnostics) else 1
    print(json.dumps(to_json(r.model), indent=2) if args.format == "json" else to_text(r.model))
    return 0
