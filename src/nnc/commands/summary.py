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
    from nnc.commands import checked_model
    from nnc.lang.checker import check_file
    from nnc.tools.summary import to_json, to_text

    r = check_file(args.file)
    model = checked_model(r)
    print(json.dumps(to_json(model), indent=2) if args.format == "json" else to_text(model))
    return 0
