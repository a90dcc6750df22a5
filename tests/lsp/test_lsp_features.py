"""`nnc lsp` requests, end to end over stdio: hover, inlay hints (and their setting), completion,
quick fixes, formatting, document symbols, go to definition and rename. Numbers are checked
against arithmetic written out here (Keras's formulas) or against `nnc check`'s own model."""

from __future__ import annotations

import pytest
from lsprotocol import types as T
from pygls.exceptions import JsonRpcException

from lsp_helpers import CONVNET, apply_edits, open_doc, position, server_errors, server_fixture
from nnc.lang.checker import check_source
from nnc.lang.fmt import format_source
from nnc.lang.kinds import ACTIVATIONS, fmt_shape

pytestmark = pytest.mark.asyncio(loop_scope="module")
client = server_fixture()

SMALL = """model small
input image: float32[28, 28, 1]

conv2d 32 kernel=3 padding=valid activation=relu
bn: batchnorm
flatten
dense 10 activation=softmax
"""


def doc(uri: str) -> T.TextDocumentIdentifier:
    return T.TextDocumentIdentifier(uri=uri)


async def hover_text(client, uri: str, p: T.Position) -> str:
    h = await client.text_document_hover_async(T.HoverParams(text_document=doc(uri), position=p))
    assert h is not None
    return h.contents.value


async def test_hover_on_a_layer_and_on_an_option(client):
    uri, _ = await open_doc(client, SMALL)
    text = await hover_text(client, uri, position(SMALL, "conv2d", 2))
    out = 28 - 3 + 1  # a valid 3x3 window on 28 pixels
    params = 32 * (3 * 3 * 1 + 1)  # Keras: filters x (kernel area x input channels + bias)
    assert (out, params) == (26, 320)
    assert "26x26x32" in text and f"**{params} (trainable {params}, non-trainable 0)**" in text
    assert "Conv2D" in text and "conv2d_1" in text
    assert f"MACs: {out * out * 32 * 3 * 3 * 1:,}" in text
    # batchnorm: gamma and beta trained, the moving mean and variance not (4 x 32 weights)
    text = await hover_text(client, uri, position(SMALL, "batchnorm", 3))
    assert "BatchNormalization" in text and f"**{4 * 32} (trainable {2 * 32}, non-trainable {2 * 32})**" in text
    # on an option: its doc, its values and its default
    text = await hover_text(client, uri, position(SMALL, "padding=", 2))
    assert "padding" in text and "`valid`, `same`" in text and "Default: `valid`" in text
    text = await hover_text(client, uri, position(SMALL, "kernel=3", 8))
    assert "kernel_size" in text and "required" in text
    # a half-typed line below: the layers above it keep their shapes
    typing = SMALL + "dense 5 activation=re"
    uri, diags = await open_doc(client, typing)
    assert [d.range.start.line for d in diags] == [typing.count("\n")]
    assert "26x26x32" in await hover_text(client, uri, position(typing, "conv2d", 2))
    # a block: its output and its parameters (the body's conv2d: 4 x (3*3*4 + 1))
    uri, _ = await open_doc(client, BLOCKS)
    text = await hover_text(client, uri, position(BLOCKS, "residual", 2))
    assert "`residual` block" in text and "**8x8x4**" in text and f"**{4 * (3 * 3 * 4 + 1)}" in text
    assert not server_errors(client)


async def test_inlay_hints_and_their_setting(client):
    text = CONVNET.read_text()
    uri, _ = await open_doc(client, text)
    lines = text.split("\n")
    rng = T.Range(start=T.Position(line=0, character=0), end=T.Position(line=len(lines), character=0))
    hints = await client.text_document_inlay_hint_async(T.InlayHintParams(text_document=doc(uri), range=rng))
    model = check_source(text).model
    assert len(hints) == len(model.layers) == 8
    for hint, layer in zip(hints, model.layers):
        line = layer.span.line - 1
        assert hint.position == T.Position(line=line, character=len(lines[line]))  # the end of the layer's line
        assert hint.label == f"{fmt_shape(layer.output_shape)} \u00b7 {layer.params:,} params"
    assert hints[0].label == "26x26x32 \u00b7 320 params"
    # off through the settings (the server asks the editor to refresh), then on again
    refreshes = client.inlay_refreshes
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings={"nnc": {"inlayHints": False}}))
    assert list(await client.text_document_inlay_hint_async(T.InlayHintParams(text_document=doc(uri), range=rng))) == []
    assert client.inlay_refreshes == refreshes + 1
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings={"nnc": {"inlayHints": True}}))
    again = await client.text_document_inlay_hint_async(T.InlayHintParams(text_document=doc(uri), range=rng))
    assert [h.label for h in again] == [h.label for h in hints]
    # a client that sends no settings: the server asks for the `nnc` section (workspace/configuration)
    client.set_configuration({"inlayHints": False}, section="nnc")
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings=None))
    for _ in range(100):  # the server's configuration request and our answer go round first
        hints_now = await client.text_document_inlay_hint_async(T.InlayHintParams(text_document=doc(uri), range=rng))
        if not hints_now:
            break
    assert list(hints_now) == []
    client.set_configuration({"inlayHints": True}, section="nnc")
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings=None))
    for _ in range(100):
        hints_now = await client.text_document_inlay_hint_async(T.InlayHintParams(text_document=doc(uri), range=rng))
        if hints_now:
            break
    assert len(hints_now) == len(hints)
    assert not server_errors(client)


async def test_inlay_setting_shapes():
    from nnc.tools.lsp import _setting

    assert _setting({"nnc": {"inlayHints": False}}) is False
    assert _setting({"inlayHints": True}) is True
    assert _setting({"nnc.inlayHints": False}) is False
    assert _setting(None) is None and _setting({"other": 1}) is None


async def labels(client, uri: str, p: T.Position) -> dict[str, T.CompletionItem]:
    r = await client.text_document_completion_async(T.CompletionParams(text_document=doc(uri), position=p))
    items = r.items if isinstance(r, T.CompletionList) else r
    return {i.label: i for i in items}


async def test_completion(client):
    text = ("model m\ninput image: float32[28, 28, 1]\n"
            "\n"  # line 2: a layer line to be
            "conv2d 32 kernel=3 \n"
            "conv2d 8 kernel=3 padding=\n"
            "dense 10 activation=\n"
            "train {\n  \n  loss \n  optimizer \n  optimizer adam \n}\n")
    uri, _ = await open_doc(client, text)
    kinds = await labels(client, uri, T.Position(line=2, character=0))
    assert {"conv2d", "dense", "lstm", "batchnorm", "residual", "train"} <= set(kinds)
    assert kinds["conv2d"].detail == "Keras Conv2D"
    opts = await labels(client, uri, T.Position(line=3, character=len("conv2d 32 kernel=3 ")))
    assert {"padding=", "stride=", "activation=", "use_bias="} <= set(opts) and "kernel=" not in opts
    assert opts["padding="].detail == "default: valid" and opts["use_bias="].detail == "default: true"
    values = await labels(client, uri, T.Position(line=4, character=len("conv2d 8 kernel=3 padding=")))
    assert set(values) == {"valid", "same"}
    acts = await labels(client, uri, T.Position(line=5, character=len("dense 10 activation=")))
    assert set(acts) == set(ACTIVATIONS)
    keys = await labels(client, uri, T.Position(line=7, character=2))
    assert {"loss", "optimizer", "metrics", "epochs", "batch_size", "validation_split"} <= set(keys)
    assert "conv2d" not in keys
    losses = await labels(client, uri, T.Position(line=8, character=len("  loss ")))
    assert {"sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy", "mse"} <= set(losses)
    optimizers = await labels(client, uri, T.Position(line=9, character=len("  optimizer ")))
    assert {"sgd", "rmsprop", "adam"} <= set(optimizers)
    adam = await labels(client, uri, T.Position(line=10, character=len("  optimizer adam ")))
    assert adam["lr="].detail == "default: 0.001" and adam["beta_2="].detail == "default: 0.999"


async def fixes(client, uri: str, text: str, diags: list[T.Diagnostic]) -> dict[str, str]:
    """Each quick fix the server offers for these diagnostics: its title and the text it makes."""
    out = {}
    for d in diags:
        actions = await client.text_document_code_action_async(T.CodeActionParams(
            text_document=doc(uri), range=d.range, context=T.CodeActionContext(diagnostics=[d])))
        for a in actions:
            assert a.kind == T.CodeActionKind.QuickFix
            out[a.title] = apply_edits(text, a.edit.changes[uri])
    return out


async def test_code_actions(client):
    # a did-you-mean (a misspelt activation)
    typo = SMALL.replace("activation=softmax", "activation=sotfmax")
    uri, diags = await open_doc(client, typo)
    fixed = (await fixes(client, uri, typo, diags))["Change to 'softmax'"]
    assert fixed == SMALL and check_source(fixed).ok

    # a dense on an image: insert a flatten before it
    img = "model m\ninput x: float32[28, 28, 1]\n\nconv2d 8 kernel=3\n  dense 10\n"
    uri, diags = await open_doc(client, img)
    assert [d.code for d in diags] == ["dense-after-conv"]
    fixed = (await fixes(client, uri, img, diags))["Insert `flatten` before this dense"]
    assert fixed == img.replace("  dense 10", "  flatten\n  dense 10")
    result = check_source(fixed)
    assert result.ok and not result.diagnostics
    assert result.model.layers[-1].weights["kernel"] == (26 * 26 * 8, 10)

    # a recurrent layer feeding a recurrent layer without return_sequences
    rnn = "model m\ninput x: float32[20, 8]\nlstm 16  # the encoder\nlstm 8\n"
    uri, diags = await open_doc(client, rnn)
    assert [d.code for d in diags] == ["bad-input-rank"]
    fixed = (await fixes(client, uri, rnn, diags))["Set return_sequences=true on line 3"]
    assert fixed == rnn.replace("lstm 16 ", "lstm 16 return_sequences=true ")
    assert check_source(fixed).ok
    off = rnn.replace("lstm 16", "lstm 16 return_sequences=false")
    uri, diags = await open_doc(client, off)
    assert (await fixes(client, uri, off, diags))["Set return_sequences=true on line 3"] == rnn.replace(
        "lstm 16", "lstm 16 return_sequences=true")

    # an expect line that does not hold: fixed to the computed value
    model = check_source(SMALL).model
    wrong = SMALL + "\nexpect params == 12\nexpect output == [3]\n"
    uri, diags = await open_doc(client, wrong)
    assert [d.code for d in diags] == ["expect-failed", "expect-failed"]
    found = await fixes(client, uri, wrong, diags)
    total = 32 * (3 * 3 + 1) + 4 * 32 + 26 * 26 * 32 * 10 + 10  # conv2d, batchnorm, dense: Keras's counts
    assert model.total_params == total
    assert found[f"Change to expect params == {total}"] == wrong.replace("== 12", f"== {total}")
    assert found["Change to expect output == [10]"] == wrong.replace("== [3]", "== [10]")
    assert check_source(wrong.replace("== 12", f"== {total}").replace("== [3]", "== [10]")).ok
    budget = SMALL + "\nexpect params <= 12\n"  # another comparison: set to the computed value
    uri, diags = await open_doc(client, budget)
    assert (await fixes(client, uri, budget, diags))[f"Change to expect params == {total}"] == \
        budget.replace("<= 12", f"== {total}")
    assert not server_errors(client)


async def test_formatting(client):
    messy = "model   m\ninput x:float32[8]\ndense 4   activation=relu\n  dense 2\n"
    uri, _ = await open_doc(client, messy)
    edits = await client.text_document_formatting_async(T.DocumentFormattingParams(
        text_document=doc(uri), options=T.FormattingOptions(tab_size=2, insert_spaces=True)))
    expected, errors = format_source(messy)
    assert not errors and expected != messy
    assert apply_edits(messy, edits) == expected
    broken = "model m\ninput x: float32[8\ndense 4\n"  # a syntax error: left as it is
    uri, diags = await open_doc(client, broken)
    assert diags and diags[0].code == "syntax"
    edits = await client.text_document_formatting_async(T.DocumentFormattingParams(
        text_document=doc(uri), options=T.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert not edits


BLOCKS = """model r
input x: float32[8, 8, 4]
stem: conv2d 4 kernel=3 padding=same
residual {
  conv2d 4 kernel=3 padding=same
}
globalavgpool
head: dense 2   # head reads the pooled features
train {
  loss mse
}
"""


async def test_document_symbols(client):
    uri, diags = await open_doc(client, BLOCKS)
    assert diags == []
    syms = await client.text_document_document_symbol_async(T.DocumentSymbolParams(text_document=doc(uri)))
    model = check_source(BLOCKS).model
    names = [s.name for s in syms]
    assert names == ["r", "x", "stem", model.body[1].name, "globalavgpool_1", "head", "train"]
    block = syms[3]
    assert block.kind == T.SymbolKind.Namespace and [c.name for c in block.children] == ["conv2d_2"]
    assert (block.range.start.line, block.range.end.line) == (3, 5)
    assert syms[2].detail == f"conv2d \u00b7 8x8x4 \u00b7 {4 * (3 * 3 * 4 + 1)} params"
    assert [c.name for c in syms[-1].children] == ["loss"]


async def test_definition_of_a_named_layer(client):
    uri, _ = await open_doc(client, BLOCKS)
    # names are never referenced by other statements: on the name, its own place
    loc = await client.text_document_definition_async(T.DefinitionParams(
        text_document=doc(uri), position=position(BLOCKS, "head: dense", 1)))
    start = position(BLOCKS, "head: dense")
    assert loc.uri == uri and loc.range.start == start and loc.range.end.character == start.character + 4
    # a name written in a comment leads to the layer it names
    loc = await client.text_document_definition_async(T.DefinitionParams(
        text_document=doc(uri), position=position(BLOCKS, "head reads", 2)))
    assert loc.range.start == start


async def test_rename_a_layer(client):
    uri, _ = await open_doc(client, BLOCKS)
    at = position(BLOCKS, "stem:", 1)
    prep = await client.text_document_prepare_rename_async(T.PrepareRenameParams(text_document=doc(uri), position=at))
    assert prep.placeholder == "stem"
    edit = await client.text_document_rename_async(T.RenameParams(text_document=doc(uri), position=at, new_name="entry"))
    renamed = apply_edits(BLOCKS, edit.changes[uri])
    assert renamed == BLOCKS.replace("stem:", "entry:")
    assert [l.name for l in check_source(renamed).model.layers][0] == "entry"
    for taken in ("head", "conv2d_2", "globalavgpool_1"):  # explicit and numbered names alike
        with pytest.raises(JsonRpcException, match="already the name"):
            await client.text_document_rename_async(T.RenameParams(text_document=doc(uri), position=at, new_name=taken))
    with pytest.raises(JsonRpcException, match="not a valid layer name"):
        await client.text_document_rename_async(T.RenameParams(text_document=doc(uri), position=at, new_name="2nd"))
    # an unnamed layer has no name to rename
    unnamed = position(BLOCKS, "globalavgpool", 2)
    assert await client.text_document_prepare_rename_async(
        T.PrepareRenameParams(text_document=doc(uri), position=unnamed)) is None
    assert not server_errors(client)  # a refusal is an answer, not a fault: nothing logged
