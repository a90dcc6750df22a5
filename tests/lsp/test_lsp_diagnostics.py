"""`nnc lsp` diagnostics, end to end over stdio: on open, on change (debounced, stale results
dropped), codes, severities and related locations as `nnc check` has them, and a spec typed
character by character from empty to the lecture's convnet without a server error."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types as T

from lsp_helpers import CONVNET, change, next_diagnostics, open_doc, position, server_errors, server_fixture
from nnc.lang.checker import check_source

pytestmark = pytest.mark.asyncio(loop_scope="module")
client = server_fixture()

MISTAKE = """model m
input image: float32[28, 28, 1]
conv2d 32 kernel=3 activation=relu
maxpool2d 2
dense 10 activation=sotfmax
"""


async def test_diagnostic_on_open_at_the_right_line(client):
    uri, diags = await open_doc(client, MISTAKE)
    expected = check_source(MISTAKE, "x.nnspec").diagnostics
    assert [d.code for d in diags] == [d.code for d in expected] == ["bad-value"]
    d = diags[0]
    # line 5 (0-based 4), on the misspelt value, with the checker's message and the suggestion
    assert d.range.start == position(MISTAKE, "sotfmax")
    assert d.range.end == position(MISTAKE, "sotfmax", len("sotfmax"))
    assert d.severity == T.DiagnosticSeverity.Error and d.source == "nnc"
    assert expected[0].message in d.message and "did you mean 'softmax'" in d.message
    assert not server_errors(client)


async def test_warnings_are_warnings_and_related_locations(client):
    text = ("model m\ninput x: float32[28, 28, 1]\n"
            "a: conv2d 8 kernel=3\n"
            "dense 10\n")  # a dense on an image: the checker's dense-after-conv warning
    _, diags = await open_doc(client, text)
    assert [(d.code, d.severity) for d in diags] == [("dense-after-conv", T.DiagnosticSeverity.Warning)]
    assert diags[0].range.start.line == 3

    dup = "model m\ninput x: float32[8]\nh: dense 4\nh: dense 2\n"
    _, diags = await open_doc(client, dup)
    assert [d.code for d in diags] == ["duplicate-name"]
    assert diags[0].range.start.line == 3
    # the second location: the first `h`, on line 3 (0-based 2)
    [rel] = diags[0].related_information
    assert rel.location.range.start.line == 2 and "line 3" in rel.message


async def test_changes_are_debounced_and_only_the_latest_version_is_published(client):
    text = CONVNET.read_text()
    uri, diags = await open_doc(client, text)
    assert diags == []
    first = len(client.published)
    waiter = asyncio.ensure_future(next_diagnostics(client, uri, 6))
    # five quick edits, each breaking another line, then a sixth: only the last state is reported
    for v, line in enumerate(["conv2d 32 kernel=3", "maxpool2d 2", "flatten", "dense 64"], start=2):
        change(client, uri, v, text.replace(line, "dens3" + line[line.index(" "):] if " " in line else "dens3", 1))
    final = text.replace("epochs 10", "epochs 0")
    change(client, uri, 6, final)
    diags = await waiter
    assert [d.code for d in diags] == [d.code for d in check_source(final).diagnostics] == ["bad-value"]
    assert diags[0].range.start == position(final, "epochs 0", len("epochs "))
    # the edits came in one burst: nothing was published for versions 2..5
    assert [v for u, v in client.published[first:] if u == uri] == [6]
    assert not server_errors(client)


async def test_typing_the_convnet_character_by_character(client):
    """From empty to the lecture's convnet one character at a time, as an editor sends it
    (incremental changes); after each edit a request (hover, inlay hints, completion, symbols,
    code actions, in turn) at the cursor, each of which must be answered."""
    target = CONVNET.read_text()
    uri, _ = await open_doc(client, "")
    steps = list(range(1, len(target) + 1))
    answered = 0
    prev = 0
    for version, n in enumerate(steps, start=2):
        before = target[:prev]
        line = before.count("\n")
        char = len(before) - (before.rfind("\n") + 1)
        at = T.Position(line=line, character=char)
        client.text_document_did_change(T.DidChangeTextDocumentParams(
            text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[T.TextDocumentContentChangePartial(range=T.Range(start=at, end=at),
                                                               text=target[prev:n])]))
        prev = n
        now = target[:n]
        cursor = T.Position(line=now.count("\n"), character=len(now) - (now.rfind("\n") + 1))
        doc = T.TextDocumentIdentifier(uri=uri)
        kind = version % 5
        if kind == 0:
            await client.text_document_hover_async(T.HoverParams(text_document=doc, position=cursor))
        elif kind == 1:
            r = await client.text_document_inlay_hint_async(T.InlayHintParams(
                text_document=doc, range=T.Range(start=T.Position(line=0, character=0), end=cursor)))
            assert r is not None
        elif kind == 2:
            r = await client.text_document_completion_async(T.CompletionParams(text_document=doc, position=cursor))
            assert r is not None
        elif kind == 3:
            r = await client.text_document_document_symbol_async(T.DocumentSymbolParams(text_document=doc))
            assert r is not None
        else:
            r = await client.text_document_code_action_async(T.CodeActionParams(
                text_document=doc, range=T.Range(start=T.Position(line=0, character=0), end=cursor),
                context=T.CodeActionContext(diagnostics=[])))
            assert r is not None
        answered += 1
    assert answered == len(steps)
    final_version = len(steps) + 1
    diags = await next_diagnostics(client, uri, final_version)
    assert diags == []  # the finished convnet checks clean
    hints = await client.text_document_inlay_hint_async(T.InlayHintParams(
        text_document=T.TextDocumentIdentifier(uri=uri),
        range=T.Range(start=T.Position(line=0, character=0), end=T.Position(line=target.count("\n"), character=0))))
    model = check_source(target).model
    assert len(hints) == len(model.layers)
    assert not server_errors(client)
