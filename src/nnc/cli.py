"""The `nnc` command line. Each command lives in nnc.commands.<name> with `HELP`, `EXAMPLE`,
`add_arguments(parser)` and `main(args) -> exit code`; only the command being run is
imported, so `nnc check` never pays for numpy or onnx."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from nnc import __version__
from nnc.lang.errors import Reported, UserError

COMMANDS = {
    "check": "check specs: syntax, shapes, parameter counts, expect lines",
    "summary": "print a Keras-like table of a spec's layers, shapes and parameters",
    "compile": "compile a spec to an ONNX model",
    "run": "run an ONNX model on onnxruntime (CPU or CUDA)",
    "train": "train a spec with the NumPy backend",
    "eval": "evaluate trained weights on a data set's test split",
    "fmt": "format specs in the canonical layout",
    "graph": "draw a spec as a diagram (svg, png or dot)",
    "completion": "print a shell completion script (bash or zsh)",
    "lsp": "run the language server for editors (on stdio)",
    "schema": "print the JSON Schema of a JSON output nnc writes (check, summary, history, ...)",
    "import": "turn a Keras model (.keras, .h5) or an ONNX graph into a spec and a checkpoint",
    "export": "write a spec as a Keras 3 .keras model or a standalone PyTorch module",
}
MODULES = {"import": "import_"}  # command -> its module in nnc.commands, where the word is a Python keyword


def _parser(command: str | None) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="nnc",
        description="nnc compiles neural-network specs (.nnspec): check, summarize, compile to ONNX, train.",
        epilog="example: nnc check specs/*.nnspec   |   run `nnc COMMAND --help` for a command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"nnc {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, help in COMMANDS.items():
        if name == command:
            mod = importlib.import_module(f"nnc.commands.{MODULES.get(name, name)}")
            p = sub.add_parser(name, help=help, description=mod.HELP, epilog="example:\n  " + mod.EXAMPLE,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
            mod.add_arguments(p)
            p.set_defaults(_main=mod.main)
        else:
            sub.add_parser(name, help=help, add_help=False)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = _parser(command if command in COMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
        return int(e.code or 0)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    # SIGTERM (kill, a batch scheduler, a CI timeout) unwinds like Ctrl-C: temporary files are
    # removed and `nnc train` checkpoints, instead of dying with a half-written .tmp left behind.
    old_term = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        old_term = signal.signal(signal.SIGTERM, _terminated)
    try:
        return int(args._main(args) or 0)
    except Reported as e:
        return e.exit_code
    except UserError as e:
        print(f"nnc {args.command}: error: {e.message}", file=sys.stderr)
        if e.help:
            print(f"help: {e.help}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"nnc {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError as e:  # numpy refused an allocation: the model or the data does not fit, no bug
        print(f"nnc {args.command}: error: out of memory: {e}", file=sys.stderr)
        print("help: `nnc summary` shows the memory a sample's activations need; try a smaller --batch-size, "
              "fewer samples or a smaller model", file=sys.stderr)
        return 1
    except Exception as e:  # a bug in nnc: say so in one line; NNC_DEBUG=1 shows the traceback
        if os.environ.get("NNC_DEBUG"):
            raise
        print(f"nnc {args.command}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("help: this is a bug in nnc; rerun with NNC_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return 3
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def _terminated(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
