"""nnc schema"""

from __future__ import annotations

HELP = """Print the JSON Schema (draft 2020-12) of a JSON file or output nnc writes, the contract
that tools reading it may rely on:

  check          nnc check --format json (a list of diagnostics)
  summary        nnc summary --format json
  history        a training run's history.json (metric name -> one number an epoch)
  state          the `meta` JSON inside a training run's state.npz
  onnx-metadata  the nnc.* metadata_props of a model nnc compile wrote
  eval           nnc eval --format json

Each of them carries a schema_version (the ONNX metadata: nnc.schema_version); within one
version fields are only added, never renamed or removed."""
EXAMPLE = "nnc schema summary > nnc-summary.schema.json"

# nnc.tools.schemas.SCHEMAS's keys, here so that parsing the arguments does not import pydantic
NAMES = ("check", "summary", "history", "state", "onnx-metadata", "eval")


def add_arguments(p):
    p.add_argument("name", choices=NAMES, metavar="NAME", help="one of: " + ", ".join(NAMES))


def main(args) -> int:
    from nnc.lang.errors import UserError

    try:
        from nnc.tools.schemas import dumps
    except ImportError as e:  # pydantic is a dependency of nnc; a broken install says so plainly
        raise UserError(f"nnc schema needs pydantic 2 ({e})", help="pip install 'pydantic>=2'") from None
    print(dumps(args.name))
    return 0
