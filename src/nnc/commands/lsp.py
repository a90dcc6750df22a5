"""nnc lsp"""

from __future__ import annotations

HELP = """Run the nnc language server on stdio, for editors (VS Code, Neovim, Helix, ...): diagnostics
as you type (the same as `nnc check`), hover with each layer's Keras twin, output shape,
parameters and MACs, inlay hints with the shape and parameters at the end of each layer line,
completion of kinds, options, values and train settings, quick fixes, formatting (`nnc fmt`),
document symbols, go to definition and rename of layer names.

Settings (initializationOptions or workspace/didChangeConfiguration): {"nnc": {"inlayHints": false}}
turns the inlay hints off.

The server speaks the Language Server Protocol on standard input and output; its log goes to
standard error (or --log-file). It needs pygls (installed with nnc)."""
EXAMPLE = "nnc lsp --log-file /tmp/nnc-lsp.log   (started by an editor: see the README, Editors)"


def add_arguments(p):
    p.add_argument("--log-file", metavar="FILE", help="write the server's log here instead of standard error")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="warning",
                   help="how much to log (default: warning)")
    p.add_argument("--stdio", action="store_true", help="accepted for editors that pass it; stdio is the only transport")


def main(args) -> int:
    import logging

    from nnc.lang.errors import UserError

    handler = logging.FileHandler(args.log_file, encoding="utf-8") if args.log_file else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), handlers=[handler], force=True)
    try:
        from nnc.tools.lsp import serve
    except ImportError as e:
        raise UserError(f"nnc lsp needs pygls: {e}", help="pip install 'pygls>=2'") from None
    serve()
    return 0
