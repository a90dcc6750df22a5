"""Shared pieces of the `nnc lsp` tests: a real client (pytest-lsp) talking to `python -m nnc lsp`
over stdio, documents opened and edited as an editor does, and the server's log to read."""

from __future__ import annotations

import itertools
import pathlib
import sys
import tempfile

import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, register_lsp_features
from pygls.protocol import default_converter

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONVNET = (pathlib.Path("/work/shared/contract/mnist_convnet.nnspec")
           if pathlib.Path("/work/shared/contract/mnist_convnet.nnspec").exists()
           else ROOT / "specs" / "mnist_convnet.nnspec")
_count = itertools.count()


def _make_client() -> LanguageClient:
    """pytest-lsp's test client, also recording every publishDiagnostics (uri, version) in order."""
    client = LanguageClient(converter_factory=default_converter)
    client.published = []

    def publish(ls, params: T.PublishDiagnosticsParams):
        client.published.append((params.uri, params.version))
        client.diagnostics[params.uri] = params.diagnostics

    register_lsp_features(client, {**DEFAULT_CLIENT_FEATURES, T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS: publish})
    return client


def server_fixture(initialization_options: dict | None = None):
    """A module-scoped client connected to a fresh server; the fixture's `log` attribute is the
    server's log file (tracebacks and internal errors land there)."""
    log = pathlib.Path(tempfile.mkdtemp(prefix="nnc-lsp-")) / "server.log"
    config = ClientServerConfig(server_command=[sys.executable, "-m", "nnc", "lsp", "--log-file", str(log)],
                                client_factory=_make_client)

    @pytest_lsp.fixture(scope="module", config=config)
    async def client(lsp_client: LanguageClient):
        lsp_client.server_log = log
        # the client answers the server's inlayHint/refresh requests (and counts them)
        lsp_client.inlay_refreshes = 0

        @lsp_client.feature(T.WORKSPACE_INLAY_HINT_REFRESH)
        def _refresh(ls, params):
            lsp_client.inlay_refreshes += 1

        await lsp_client.initialize_session(T.InitializeParams(
            capabilities=client_capabilities("neovim@v0.11.0"), root_uri=ROOT.as_uri(),
            initialization_options=initialization_options))
        yield
        await lsp_client.shutdown_session()

    return client


def server_errors(client: LanguageClient) -> list[str]:
    """Internal errors the server reported (window/logMessage errors) or logged with a traceback."""
    errors = [m.message for m in client.log_messages if m.type == T.MessageType.Error]
    log = pathlib.Path(client.server_log)
    if log.exists():
        text = log.read_text()
        if "Traceback" in text or "internal error" in text:
            errors.append(text)
    return errors


async def next_diagnostics(client: LanguageClient, uri: str, version: int) -> list[T.Diagnostic]:
    """The diagnostics the server publishes for `uri` at `version` (earlier publications skipped)."""
    while True:
        params = await client.wait_for_notification(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        if params.uri == uri and params.version == version:
            return list(params.diagnostics)


async def open_doc(client: LanguageClient, text: str, wait: bool = True) -> tuple[str, list[T.Diagnostic]]:
    """Open a new document; returns its uri and the diagnostics published on open."""
    uri = (ROOT / "tests" / "lsp" / f"doc{next(_count)}.nnspec").as_uri()
    waiter = client.wait_for_notification(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS) if wait else None
    client.text_document_did_open(T.DidOpenTextDocumentParams(
        text_document=T.TextDocumentItem(uri=uri, language_id="nnspec", version=1, text=text)))
    diags: list[T.Diagnostic] = []
    if waiter is not None:
        params = await waiter
        while params.uri != uri:
            params = await client.wait_for_notification(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        diags = list(params.diagnostics)
    return uri, diags


def change(client: LanguageClient, uri: str, version: int, text: str) -> None:
    """Replace the whole text (a full-document change)."""
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[T.TextDocumentContentChangeWholeDocument(text=text)]))


def position(text: str, needle: str, offset: int = 0) -> T.Position:
    """The position of the first `needle` in `text` (plus `offset` characters; ASCII text)."""
    i = text.index(needle) + offset
    line = text.count("\n", 0, i)
    return T.Position(line=line, character=i - (text.rfind("\n", 0, i) + 1))


def offset(text: str, p: T.Position) -> int:
    lines = text.split("\n")
    return sum(len(x) + 1 for x in lines[:p.line]) + p.character


def apply_edits(text: str, edits: list[T.TextEdit]) -> str:
    """Apply TextEdits as an editor does (from the last to the first)."""
    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        a, b = offset(text, e.range.start), offset(text, e.range.end)
        text = text[:a] + e.new_text + text[b:]
    return text
