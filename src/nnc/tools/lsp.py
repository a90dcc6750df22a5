"""`nnc lsp`: a language server for .nnspec files on stdio (pygls, lsprotocol types).

Everything it knows comes from the checker as `nnc check` runs it (no second parser): the
diagnostics are `check_source`'s, and the layers with their shapes and parameter counts are
the checker's own (`_Checker`), kept even when a later line has an error, so hover and inlay
hints work on the layers above a mistake while one types.

Robustness: checks run on a worker thread (one, so they are serialized), a change is checked
200 ms after the typing stops, a result for an older version of a document is dropped, and
every handler is guarded: an internal error is logged (window/logMessage and the log file)
and the request answers with nothing, the server lives on.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types as T
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

from nnc import __version__
from nnc.lang import checker as _checker
from nnc.lang.checker import check_source
from nnc.lang.diagnostics import Span
from nnc.lang.fmt import format_source, split_comment
from nnc.lang.kinds import KINDS, REQUIRED, Opt, fmt_shape
from nnc.lang.model import BLOCKS, Block, CheckResult, Layer, Model
from nnc.lang.parser import (
    BLOCK_WORDS,
    BlockStmt,
    ExpectStmt,
    InputDecl,
    LayerStmt,
    ModelDecl,
    Option,
    SpecAST,
    TrainBlock,
    TrainItem,
    Value,
    parse,
)

log = logging.getLogger("nnc.lsp")

DEBOUNCE_S = 0.2
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
KEYWORDS = ("model", "input", "expect", "train")
EXPECTATIONS = ("params", "trainable_params", "non_trainable_params", "output")


# --- analysis: one check of one version of a document -----------------------------------------


@dataclass
class Analysis:
    text: str
    version: int | None
    result: CheckResult  # exactly what `nnc check` reports
    ast: SpecAST
    model: Model | None  # the checker's model before errors discard it (built when only expects fail)
    layers: list[Layer]  # every layer whose shape is known (those above the first shape error)
    names: dict[str, Span]  # every layer and block name (explicit and numbered) -> where it is claimed
    codec: Any = None
    lines: list[str] = field(default_factory=list)
    by_line: dict[int, list[Layer]] = field(default_factory=dict)  # a repeat's copies share a line
    blocks_by_line: dict[int, list[Block]] = field(default_factory=dict)

    def __post_init__(self):
        self.lines = self.text.split("\n")
        for layer in self.layers:
            self.by_line.setdefault(layer.span.line, []).append(layer)
        if self.model is not None:
            from nnc.tools.summary import blocks

            for b in blocks(self.model.body or []):
                self.blocks_by_line.setdefault(b.span.line, []).append(b)

    # positions: nnc's spans are 1-based code points, LSP's 0-based client units (UTF-16 by default)

    def _units(self, line0: int, col0: int) -> int:
        text = self.lines[line0] if 0 <= line0 < len(self.lines) else ""
        part = text[:max(col0, 0)]
        return self.codec.client_num_units(part) if self.codec is not None else len(part.encode("utf-16-le")) // 2

    def pos(self, line: int, col: int) -> T.Position:
        """1-based line and column (code points) to an LSP position."""
        line0 = min(max(line - 1, 0), max(len(self.lines) - 1, 0))
        return T.Position(line=line0, character=self._units(line0, col - 1))

    def range(self, span: Span) -> T.Range:
        return T.Range(start=self.pos(span.line, span.col), end=self.pos(span.end_line, span.end_col))

    def line_end(self, line: int) -> T.Position:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return self.pos(line, len(text.rstrip("\r")) + 1)

    def at(self, p: T.Position) -> tuple[int, int]:
        """An LSP position to a 1-based (line, column) in code points."""
        if not 0 <= p.line < len(self.lines):
            return p.line + 1, p.character + 1
        text = self.lines[p.line]
        units, col = 0, 0
        for ch in text:
            if units >= p.character:
                break
            units += self.codec.client_num_units(ch) if self.codec is not None else len(ch.encode("utf-16-le")) // 2
            col += 1
        return p.line + 1, col + 1

    def full_range(self) -> T.Range:
        last = len(self.lines) - 1
        return T.Range(start=T.Position(line=0, character=0),
                       end=T.Position(line=last, character=self._units(last, len(self.lines[last]))))


def analyze(text: str, path: str = "<string>", version: int | None = None, codec: Any = None) -> Analysis:
    result = check_source(text, path)
    ast = parse(text, path)
    model, layers, names = result.model, list(result.model.layers) if result.model else [], {}
    try:
        chk = _checker._Checker(ast, _checker._Collector(path), text, path)
        built = chk.run()
        model = model or built
        layers = list(getattr(chk, "_flat", None) or (built.layers if built else layers))
        names = dict(getattr(chk, "_names", {}) or {})
    except Exception:  # the checker's internals moved: diagnostics still work, hover knows less
        log.warning("nnc lsp: could not read the checker's layers:\n%s", traceback.format_exc())
    return Analysis(text, version, result, ast, model, layers, names, codec)


def _in(span: Span | None, line: int, col: int) -> bool:
    if span is None:
        return False
    return (span.line, span.col) <= (line, col) <= (span.end_line, span.end_col)


def walk(stmts: list) -> list:
    out = []
    for st in stmts:
        out.append(st)
        if isinstance(st, BlockStmt):
            out += walk(st.body)
    return out


def statement_at(a: Analysis, line: int):
    """The innermost statement on a line: a layer, a block's head line, or a top-level statement
    (a train block resolves to its item)."""
    best = None
    for st in walk(a.ast.statements):
        if isinstance(st, BlockStmt):
            if st.span.line <= line <= st.span.end_line and best is None:
                best = st
            if st.kind_span.line == line or (st.name_span and st.name_span.line == line):
                best = st
        elif isinstance(st, TrainBlock):
            if st.span.line <= line <= st.span.end_line:
                for item in st.items:
                    if item.span.line <= line <= item.span.end_line:
                        return item
                return st
        elif st.span.line <= line <= st.span.end_line:
            return st
    return best


def _kind_options(kind: str) -> tuple[Opt, ...]:
    spec = KINDS.get(kind)
    if spec is not None:
        return tuple(spec.options)
    return tuple(getattr(_checker, "_BLOCK_OPTIONS", {}).get(kind, ((), ()))[1])


def _find_opt(opts: tuple[Opt, ...], key: str) -> Opt | None:
    for o in opts:
        if o.name == key or key in o.aliases:
            return o
    return None


def _default_text(o: Opt) -> str:
    if o.default is REQUIRED:
        return "required"
    if o.default is None:
        return "none" if o.name != "stride" else "the pool size"
    if isinstance(o.default, bool):
        return "true" if o.default else "false"
    return str(o.default)


_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "size1": "a size (3)",
               "size2": "a size (3 or 3x5)", "shape": "a shape [d1, ...]", "axes": "axes [2, 1]",
               "pad1": "an amount (1 or [1, 2])", "pad2": "an amount (1, 1x2 or [t, b, l, r])"}


def option_doc(o: Opt, owner: str) -> str:
    lines = [f"**{o.name}**: option of `{owner}`" + (f" (Keras: {', '.join(o.aliases)})" if o.aliases else "")]
    if o.doc:
        lines.append(o.doc[0].upper() + o.doc[1:] + ("" if o.doc.endswith(".") else "."))
    if o.type == "choice":
        lines.append("One of: " + ", ".join(f"`{c}`" for c in o.choices))
    else:
        lines.append("Takes " + _TYPE_WORDS.get(o.type, o.type))
    lines.append(f"Default: `{_default_text(o)}`")
    return "\n\n".join(lines)


# --- diagnostics ------------------------------------------------------------------------------

_LINE_REF = re.compile(r"\b(?:at|on) (?:the end of )?line (\d+)(?:, column (\d+))?")


def lsp_diagnostics(a: Analysis, uri: str) -> list[T.Diagnostic]:
    out = []
    for d in a.result.diagnostics:
        related = []
        for text in (d.message, d.help or ""):
            for m in _LINE_REF.finditer(text):
                line = int(m.group(1))
                if not 0 < line <= len(a.lines) or (line == d.span.line and not m.group(2)):
                    continue
                col = int(m.group(2)) if m.group(2) else len(a.lines[line - 1]) - len(a.lines[line - 1].lstrip()) + 1
                end = len(split_comment(a.lines[line - 1])[0].rstrip()) + 1
                related.append(T.DiagnosticRelatedInformation(
                    location=T.Location(uri=uri, range=a.range(Span(line, col, line, max(end, col + 1)))),
                    message=text[max(text.rfind(sep, 0, m.start()) + 2 for sep in ("; ", ", ", ": ", "(")):m.end()]))
        message = d.message + (f"\nhelp: {d.help}" if d.help else "")
        out.append(T.Diagnostic(
            range=a.range(d.span), message=message, code=d.code, source="nnc",
            severity=T.DiagnosticSeverity.Error if d.is_error else T.DiagnosticSeverity.Warning,
            related_information=related or None))
    return out


# --- hover and inlay hints --------------------------------------------------------------------


def _params_text(layers: list) -> str:
    if len(layers) > 1:  # the copies of a repeat
        return f"{_params_text(layers[:1])} each, {sum(x.params for x in layers):,} in its {len(layers)} copies"
    total = sum(x.params for x in layers)
    trainable = sum(x.trainable_params for x in layers if isinstance(x, Layer)) if all(
        isinstance(x, Layer) for x in layers) else None
    if trainable is None:
        return f"{total:,}"
    return f"{total:,} (trainable {trainable:,}, non-trainable {total - trainable:,})"


def layer_hover(layers: list[Layer]) -> str:
    first = layers[0]
    spec = first.spec
    names = ", ".join(x.name for x in layers)
    out = [f"**{names}**: `{first.kind}`, Keras `{spec.keras}`"]
    if spec.doc:
        out.append(spec.doc)
    rows = []
    for x in layers:
        prefix = f"{x.name}: " if len(layers) > 1 else ""
        rows.append(f"- {prefix}input `{fmt_shape(x.input_shape)}` \u2192 output **{fmt_shape(x.output_shape)}** "
                    f"(Keras `(None, {', '.join(map(str, x.output_shape))})`)")
    rows.append(f"- parameters: **{_params_text(layers)}**")
    weights = ", ".join(f"{w} `{fmt_shape(s)}`" for w, s in first.weights.items())
    if weights:
        rows.append(f"- weights: {weights}")
    try:
        rows.append(f"- MACs: {first.macs:,}" + (" each" if len(layers) > 1 else ""))
    except Exception:
        pass
    out.append("\n".join(rows))
    return "\n\n".join(out)


def block_hover(blocks: list[Block]) -> str:
    b = blocks[0]
    keras = {"add": "Add", "concat": "Concatenate", "multiply": "Multiply", "average": "Average",
             "maximum": "Maximum", "minimum": "Minimum", "subtract": "Subtract", "residual": "Add"}.get(b.kind)
    head = f"**{', '.join(x.name for x in blocks)}**: `{b.kind}` block" + (f", Keras `{keras}`" if keras else "")
    return (f"{head}\n\n- input `{fmt_shape(b.input_shape)}` \u2192 output **{fmt_shape(b.output_shape)}**\n"
            f"- parameters: **{_params_text(blocks)}** ({len(b.layers())} layers)")


def hover(a: Analysis, p: T.Position) -> T.Hover | None:
    line, col = a.at(p)
    st = statement_at(a, line)
    text = None
    if isinstance(st, (LayerStmt, BlockStmt)):
        for arg in st.args:
            if isinstance(arg, Option) and (_in(arg.key_span, line, col) or _in(arg.value.span, line, col)):
                o = _find_opt(_kind_options(st.kind), arg.key)
                if o is not None:
                    text = option_doc(o, st.kind)
                break
        if text is None and isinstance(st, LayerStmt):
            layers = a.by_line.get(st.span.line)
            if layers:
                text = layer_hover(layers)
            elif st.kind in KINDS:
                spec = KINDS[st.kind]
                text = (f"`{st.kind}`, Keras `{spec.keras}`\n\n{spec.doc}\n\n"
                        "Shape unknown: this line or one above it has an error.")
        elif text is None and a.blocks_by_line.get(st.span.line):
            text = block_hover(a.blocks_by_line[st.span.line])
    elif isinstance(st, TrainItem):
        text = _train_hover(st, line, col)
    elif isinstance(st, InputDecl) and a.model is not None:
        i = a.model.input
        text = f"**{i.name}**: `{i.dtype}[{', '.join(map(str, i.shape))}]`" + (f", vocab {i.vocab:,}" if i.vocab else "") \
            + "\n\nThe batch axis is implicit (Keras `(None, " + ", ".join(map(str, i.shape)) + ")`)."
    elif isinstance(st, ModelDecl) and a.model is not None:
        m = a.model
        text = (f"**{m.name}**: {len(m.layers)} layers, output `{fmt_shape(m.output_shape)}`\n\n"
                f"- parameters: **{m.total_params:,}** (trainable {m.trainable_params:,}, "
                f"non-trainable {m.non_trainable_params:,})\n- MACs: {m.total_macs:,}")
    if text is None:
        return None
    return T.Hover(contents=T.MarkupContent(kind=T.MarkupKind.Markdown, value=text))


def _train_hover(item: TrainItem, line: int, col: int) -> str | None:
    if item.key == "optimizer" and item.args and isinstance(item.args[0], Value):
        opts = _checker.OPTIMIZERS.get(str(item.args[0].value), ())
        for arg in item.args[1:]:
            if isinstance(arg, Option) and _in(arg.span, line, col):
                o = _find_opt(opts, arg.key)
                return option_doc(o, f"optimizer {item.args[0].value}") if o else None
        return f"optimizer `{item.args[0].value}`: " + ", ".join(f"{o.name}={_default_text(o)}" for o in opts)
    if item.key == "early_stopping":
        for arg in item.args:
            if isinstance(arg, Option) and _in(arg.span, line, col):
                o = _find_opt(_checker.EARLY_STOPPING, arg.key)
                return option_doc(o, "early_stopping") if o else None
    o = _checker.TRAIN_SCALARS.get(item.key)
    if o is not None:
        return f"**{item.key}** (train): default `{_default_text(o)}`"
    return None


def inlay_hints(a: Analysis, rng: T.Range) -> list[T.InlayHint]:
    out = []
    first, last = rng.start.line + 1, rng.end.line + 1
    spans = {**{ln: ("l", v) for ln, v in a.by_line.items()}, **{ln: ("b", v) for ln, v in a.blocks_by_line.items()}}
    for line in sorted(spans):
        if not first <= line <= last:
            continue
        what, nodes = spans[line]
        x = nodes[-1]
        label = f"{fmt_shape(x.output_shape)} \u00b7 {x.params:,} params"
        if len(nodes) > 1:  # the copies of a repeat: each has these parameters
            label += f" \u00d7{len(nodes)}"
        out.append(T.InlayHint(position=a.line_end(line), label=label, kind=T.InlayHintKind.Type,
                               padding_left=True))
    return out


# --- completion -------------------------------------------------------------------------------


def _open_blocks(lines: list[str]) -> list[str]:
    """The head words of the blocks open after these lines (`train`, `residual`, `branch`, ...)."""
    stack: list[str] = []
    for line in lines:
        code = split_comment(line)[0]
        start = 0
        for i, ch in enumerate(code):
            if ch == "{":
                words = re.findall(r"[A-Za-z_]\w*", code[start:i])
                stack.append(words[-1] if words else "")
                start = i + 1
            elif ch == "}":
                if stack:
                    stack.pop()
                start = i + 1
    return stack


def _item(label: str, kind: T.CompletionItemKind, detail: str | None = None, doc: str | None = None,
          insert: str | None = None, rng: T.Range | None = None, sort: str | None = None) -> T.CompletionItem:
    return T.CompletionItem(
        label=label, kind=kind, detail=detail, sort_text=sort,
        documentation=T.MarkupContent(kind=T.MarkupKind.Markdown, value=doc) if doc else None,
        text_edit=T.TextEdit(range=rng, new_text=insert if insert is not None else label) if rng else None,
        insert_text=insert if rng is None else None)


def _option_items(opts: tuple[Opt, ...], owner: str, given: set[str], rng: T.Range) -> list[T.CompletionItem]:
    out = []
    for i, o in enumerate(opts):
        if o.name in given or any(a in given for a in o.aliases):
            continue
        out.append(_item(f"{o.name}=", T.CompletionItemKind.Property, f"default: {_default_text(o)}",
                         option_doc(o, owner), rng=rng, sort=f"{i:03d}"))
    return out


def _value_items(o: Opt, rng: T.Range) -> list[T.CompletionItem]:
    if o.type == "choice":
        vals = o.choices
    elif o.type == "bool":
        vals = ("true", "false")
    else:
        return []
    return [_item(v, T.CompletionItemKind.EnumMember, "default" if v == _default_text(o) else None, rng=rng,
                  sort=f"{i:03d}") for i, v in enumerate(vals)]


def _args_completion(words: list[str], partial: str, opts: tuple[Opt, ...], owner: str, line0: int,
                     col_units: int, partial_units: int) -> list[T.CompletionItem]:
    """`key=` options of a kind or optimizer, or the values of `key=` being typed."""
    if "=" in partial:
        key, _, val = partial.partition("=")
        o = _find_opt(opts, key)
        vstart = col_units - (partial_units - len(key) - 1)
        rng = T.Range(start=T.Position(line=line0, character=vstart), end=T.Position(line=line0, character=col_units))
        return _value_items(o, rng) if o else []
    rng = T.Range(start=T.Position(line=line0, character=col_units - partial_units),
                  end=T.Position(line=line0, character=col_units))
    given = {w.split("=", 1)[0] for w in words if "=" in w}
    return _option_items(opts, owner, given, rng)


def completion(a: Analysis, p: T.Position) -> list[T.CompletionItem]:
    line0 = p.line
    if not 0 <= line0 < len(a.lines):
        return []
    _, col = a.at(p)
    prefix = a.lines[line0][:col - 1]
    if "#" in prefix and split_comment(prefix)[1] is not None:
        return []
    m = re.search(r"\S*\Z", prefix)
    partial = m.group(0) if m else ""
    col_units = p.character
    partial_units = a._units(line0, col - 1) - a._units(line0, col - 1 - len(partial))
    head = prefix[: len(prefix) - len(partial)]
    head = head.split("{")[-1]  # `branch { conv2d 32 ` completes as a line of its own
    words = head.split()
    word_rng = T.Range(start=T.Position(line=line0, character=col_units - partial_units),
                       end=T.Position(line=line0, character=col_units))
    K = T.CompletionItemKind
    opened = _open_blocks(a.lines[:line0] + [prefix])
    if "train" in opened:
        if not words:
            keys = _checker.TRAIN_KEYS
            return [_item(k, K.Keyword, f"default: {_default_text(_checker.TRAIN_SCALARS[k])}"
                          if k in _checker.TRAIN_SCALARS else "train setting", rng=word_rng) for k in keys]
        key = words[0]
        if key == "loss":
            if len(words) == 1:
                aliases = getattr(_checker, "LOSS_ALIASES", {})
                return [_item(x, K.EnumMember, "loss", rng=word_rng) for x in _checker.LOSSES] + \
                    [_item(x, K.EnumMember, f"alias of {t}", rng=word_rng) for x, t in aliases.items()]
            return _args_completion(words[2:], partial, tuple(getattr(_checker, "LOSS_OPTIONS", ())),
                                    f"loss {words[1]}", line0, col_units, partial_units)
        if key == "optimizer":
            if len(words) == 1:
                return [_item(x, K.EnumMember, ", ".join(f"{o.name}={_default_text(o)}" for o in opts),
                              rng=word_rng) for x, opts in _checker.OPTIMIZERS.items()]
            return _args_completion(words[2:], partial, _checker.OPTIMIZERS.get(words[1], ()),
                                    f"optimizer {words[1]}", line0, col_units, partial_units)
        if key == "metrics":
            return [_item(x, K.EnumMember, "metric", rng=word_rng) for x in _checker.METRICS if x not in words]
        if key == "early_stopping":
            return _args_completion(words[1:], partial, _checker.EARLY_STOPPING, "early_stopping", line0,
                                    col_units, partial_units)
        o = _checker.TRAIN_SCALARS.get(key)
        if o is not None and len(words) == 1:
            return _value_items(o, word_rng)
        return []
    # outside the train block: a layer line `[NAME:] KIND [POSITIONAL] [key=value ...]`
    if words and words[0].endswith(":") and words[0] != "input:":
        words = words[1:]
    elif words and len(words) >= 2 and words[1] == ":":
        words = words[2:]
    if not words:
        if ":" in partial:
            return []
        items = []
        for i, (k, spec) in enumerate(KINDS.items()):
            items.append(_item(k, K.Class, f"Keras {spec.keras}", spec.doc or None, rng=word_rng, sort=f"1{i:03d}"))
        for w in BLOCK_WORDS:
            items.append(_item(w, K.Module, "block", rng=word_rng, sort=f"2{w}"))
        for w in KEYWORDS:
            items.append(_item(w, K.Keyword, "statement", rng=word_rng, sort=f"3{w}"))
        return items
    first = words[0]
    if first == "expect":
        return [_item(x, K.Keyword, rng=word_rng) for x in EXPECTATIONS] if len(words) == 1 else []
    if first == "input" or first.startswith("input"):
        if head.rstrip().endswith(":"):
            return [_item(x, K.TypeParameter, rng=word_rng) for x in _checker.DTYPES]
        return []
    if first in KINDS or first in BLOCKS:
        return _args_completion(words[1:], partial, _kind_options(first), first, line0, col_units, partial_units)
    return []


# --- code actions -----------------------------------------------------------------------------

_MEANT = re.compile(r"did you mean '([^']+)'")


def _overlaps(span: Span, rng: T.Range) -> bool:
    return span.line - 1 <= rng.end.line and span.end_line - 1 >= rng.start.line


def _layer_at(a: Analysis, line: int) -> LayerStmt | None:
    st = statement_at(a, line)
    return st if isinstance(st, LayerStmt) else None


def code_actions(a: Analysis, uri: str, rng: T.Range) -> list[T.CodeAction]:
    out = []
    diags = {id(d): ld for d, ld in zip(a.result.diagnostics, lsp_diagnostics(a, uri))}

    def action(title: str, d, edits: list[T.TextEdit], preferred: bool = True) -> None:
        out.append(T.CodeAction(title=title, kind=T.CodeActionKind.QuickFix, diagnostics=[diags[id(d)]],
                                is_preferred=preferred, edit=T.WorkspaceEdit(changes={uri: edits})))

    for d in a.result.diagnostics:
        if not _overlaps(d.span, rng):
            continue
        m = _MEANT.search(d.message)
        if m and d.span.line == d.span.end_line:
            action(f"Change to '{m.group(1)}'", d, [T.TextEdit(range=a.range(d.span), new_text=m.group(1))])
        if d.code == "dense-after-conv":
            st = _layer_at(a, d.span.line)
            text = a.lines[d.span.line - 1]
            indent = text[: len(text) - len(text.lstrip())]
            if st is not None and st.span.col == len(indent) + 1:
                at = T.Position(line=d.span.line - 1, character=0)
                for i, kind in enumerate(("flatten", "globalavgpool")):
                    action(f"Insert `{kind}` before this dense", d,
                           [T.TextEdit(range=T.Range(start=at, end=at), new_text=f"{indent}{kind}\n")], i == 0)
        if d.help and "return_sequences=true" in d.help:
            m = re.search(r"line (\d+)", d.help)
            st = _layer_at(a, int(m.group(1))) if m else None
            if st is not None:
                opt = next((x for x in st.args if isinstance(x, Option) and x.key == "return_sequences"), None)
                if opt is not None:
                    edit = T.TextEdit(range=a.range(opt.value.span), new_text="true")
                else:
                    end = a.pos(st.span.end_line, st.span.end_col)
                    edit = T.TextEdit(range=T.Range(start=end, end=end), new_text=" return_sequences=true")
                action(f"Set return_sequences=true on line {st.span.line}", d, [edit])
        if d.code == "expect-failed" and a.model is not None:
            st = statement_at(a, d.span.line)
            if isinstance(st, ExpectStmt):
                m_ = a.model
                if st.what == "output":
                    value = "[" + ", ".join(map(str, m_.output_shape)) + "]"
                else:
                    value = str({"params": m_.total_params, "trainable_params": m_.trainable_params,
                                 "non_trainable_params": m_.non_trainable_params}.get(st.what, ""))
                if value:
                    if st.op == "==":
                        edit = T.TextEdit(range=a.range(st.value.span), new_text=value)
                    else:
                        v = st.value.span
                        edit = T.TextEdit(range=a.range(Span(st.op_span.line, st.op_span.col, v.end_line, v.end_col)),
                                          new_text=f"== {value}")
                    action(f"Change to expect {st.what} == {value}", d, [edit])
    return out


# --- symbols, definition, rename, formatting --------------------------------------------------


def _layer_names(a: Analysis) -> dict[tuple, list[Layer]]:
    out: dict[tuple, list[Layer]] = {}
    for layer in a.layers:
        out.setdefault((layer.span.line, layer.span.col), []).append(layer)
    return out


def document_symbols(a: Analysis) -> list[T.DocumentSymbol]:
    by_stmt = _layer_names(a)
    blocks = {(b.span.line, b.span.col): b for bs in a.blocks_by_line.values() for b in bs}
    S = T.SymbolKind

    def sym(name, kind, span, sel, detail=None, children=None):
        return T.DocumentSymbol(name=name or "?", kind=kind, range=a.range(span), selection_range=a.range(sel),
                                detail=detail, children=children or None)

    def stmts(sts):
        out = []
        for st in sts:
            if isinstance(st, LayerStmt):
                layers = by_stmt.get((st.span.line, st.span.col), [])
                name = st.name or (layers[0].name if layers else st.kind)
                detail = st.kind
                if layers:
                    detail += f" \u00b7 {fmt_shape(layers[-1].output_shape)} \u00b7 {layers[0].params:,} params"
                out.append(sym(name, S.Class, st.span, st.name_span or st.kind_span, detail))
            elif isinstance(st, BlockStmt):
                b = blocks.get((st.span.line, st.span.col))
                name = st.name or (b.name if b else st.kind)
                detail = st.kind + (f" \u00b7 {fmt_shape(b.output_shape)} \u00b7 {b.params:,} params" if b else "")
                out.append(sym(name, S.Namespace, st.span, st.name_span or st.kind_span, detail, stmts(st.body)))
            elif isinstance(st, ModelDecl):
                out.append(sym(st.name, S.Module, st.span, st.span, "model"))
            elif isinstance(st, InputDecl):
                out.append(sym(st.name, S.Variable, st.span, st.span, f"{st.dtype}[{', '.join(v.text for v in st.dims)}]"))
            elif isinstance(st, ExpectStmt):
                out.append(sym(f"expect {st.what}", S.Boolean, st.span, st.what_span, f"{st.op} {st.value.text}"))
            elif isinstance(st, TrainBlock):
                items = [sym(i.key, S.Property, i.span, i.key_span,
                             " ".join(getattr(x, "text", "") or f"{x.key}={x.value.text}" for x in i.args))
                         for i in st.items]
                out.append(sym("train", S.Object, st.span, Span(st.span.line, st.span.col, st.span.line, st.span.col + 5),
                               None, items))
        return out

    return stmts(a.ast.statements)


def _word_at(a: Analysis, line: int, col: int) -> tuple[str, Span] | None:
    if not 0 < line <= len(a.lines):
        return None
    text = a.lines[line - 1]
    for m in re.finditer(r"[A-Za-z_][A-Za-z0-9_]*", text):
        if m.start() + 1 <= col <= m.end() + 1:
            return m.group(0), Span(line, m.start() + 1, line, m.end() + 1)
    return None


def definition(a: Analysis, uri: str, p: T.Position) -> T.Location | None:
    """Names are never referenced by other statements (a spec is one stack read top to bottom):
    the definition of a layer or block name, wherever the name is written (in a comment too),
    is the place that names it; on the name itself, that is its own place."""
    line, col = a.at(p)
    w = _word_at(a, line, col)
    if w is None or w[0] not in a.names:
        return None
    return T.Location(uri=uri, range=a.range(a.names[w[0]]))


def _named_stmt_at(a: Analysis, line: int, col: int):
    for st in walk(a.ast.statements):
        if isinstance(st, (LayerStmt, BlockStmt)) and st.name and _in(st.name_span, line, col):
            return st
    return None


class Refused(JsonRpcException):
    CODE = -32803  # LSP's RequestFailed
    MESSAGE = "request failed"


def prepare_rename(a: Analysis, p: T.Position):
    st = _named_stmt_at(a, *a.at(p))
    if st is None:
        return None
    return T.PrepareRenamePlaceholder(range=a.range(st.name_span), placeholder=st.name)


def rename(a: Analysis, uri: str, p: T.Position, new_name: str) -> T.WorkspaceEdit:
    line, col = a.at(p)
    st = _named_stmt_at(a, line, col)
    if st is None:
        if isinstance(statement_at(a, line), (LayerStmt, BlockStmt)):
            raise Refused("this layer has no explicit name to rename; write NAME: before its kind to name it")
        raise Refused("no layer name here")
    if not NAME_RE.match(new_name):
        raise Refused(f"'{new_name}' is not a valid layer name: a letter or _ then letters, digits or _")
    if new_name in KEYWORDS or new_name in BLOCK_WORDS:
        raise Refused(f"'{new_name}' is a keyword of the language")
    if new_name != st.name and new_name in a.names:
        raise Refused(f"'{new_name}' is already the name of a layer or block (line {a.names[new_name].line})")
    return T.WorkspaceEdit(changes={uri: [T.TextEdit(range=a.range(st.name_span), new_text=new_name)]})


def formatting(a: Analysis, path: str) -> list[T.TextEdit]:
    new, _errors = format_source(a.text, path)
    if new is None or new == a.text:  # a spec with syntax errors is left as it is
        return []
    return [T.TextEdit(range=a.full_range(), new_text=new)]


# --- the server -------------------------------------------------------------------------------


def _setting(options: Any) -> bool | None:
    """`nnc.inlayHints` from initializationOptions or settings: {"nnc": {"inlayHints": b}},
    {"inlayHints": b} or {"nnc.inlayHints": b}."""
    if not isinstance(options, dict):
        return None
    for src in (options.get("nnc"), options):
        if isinstance(src, dict):
            for key in ("inlayHints", "nnc.inlayHints"):
                v = src.get(key)
                if isinstance(v, bool):
                    return v
                if isinstance(v, dict) and isinstance(v.get("enabled"), bool):
                    return v["enabled"]
    return None


class NncLanguageServer(LanguageServer):
    def __init__(self, debounce: float = DEBOUNCE_S):
        super().__init__("nnc", __version__, text_document_sync_kind=T.TextDocumentSyncKind.Incremental)
        self.debounce = debounce
        self.checks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnc-check")
        self.cache: dict[str, Analysis] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.inlay_hints_enabled = True

    def internal_error(self, where: str, error: BaseException) -> None:
        log.error("nnc lsp: internal error in %s: %s: %s\n%s", where, type(error).__name__, error,
                  "".join(traceback.format_exception(type(error), error, error.__traceback__)))
        try:
            self.window_log_message(T.LogMessageParams(
                type=T.MessageType.Error, message=f"nnc lsp: internal error in {where}: {type(error).__name__}: {error}"))
        except Exception:  # pragma: no cover - the client is gone
            pass

    def path(self, uri: str) -> str:
        try:
            return self.workspace.get_text_document(uri).path or uri
        except Exception:
            return uri

    async def analysis(self, uri: str) -> Analysis | None:
        """The analysis of the document as it is now (cached per version; computed off the event loop)."""
        doc = self.workspace.get_text_document(uri)
        text, version = doc.source, doc.version
        cached = self.cache.get(uri)
        if cached is not None and cached.version == version and cached.text == text:
            return cached
        codec = self.workspace.position_codec
        a = await asyncio.get_running_loop().run_in_executor(self.checks, analyze, text, self.path(uri), version, codec)
        current = self.workspace.text_documents.get(uri)
        if current is not None and current.version == version:
            self.cache[uri] = a
        return a

    async def publish(self, uri: str) -> None:
        try:
            self.timers.pop(uri, None)
            if uri not in self.workspace.text_documents:
                return
            version = self.workspace.get_text_document(uri).version
            a = await self.analysis(uri)
            doc = self.workspace.text_documents.get(uri)
            if a is None or doc is None or doc.version != version or a.version != version:
                return  # a newer version is on its way: this result is stale
            self.text_document_publish_diagnostics(T.PublishDiagnosticsParams(
                uri=uri, version=version, diagnostics=lsp_diagnostics(a, uri)))
        except Exception as e:
            self.internal_error("diagnostics", e)

    def schedule(self, uri: str) -> None:
        old = self.timers.pop(uri, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self.timers[uri] = loop.call_later(self.debounce, lambda: asyncio.ensure_future(self.publish(uri)))

    def set_inlay_hints(self, value: bool | None) -> None:
        if value is None or value == self.inlay_hints_enabled:
            return
        self.inlay_hints_enabled = value
        try:
            caps = self.client_capabilities.workspace
            if caps and caps.inlay_hint and caps.inlay_hint.refresh_support:
                fut = self.workspace_inlay_hint_refresh(None)
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # a client may refuse it
        except Exception as e:
            self.internal_error("inlay hint refresh", e)


server = NncLanguageServer()


def guarded(method: str, options: Any = None, default: Any = None):
    """Register a handler that never lets an exception out: it is logged, the answer is `default`
    (a refusal, such as a rename to a taken name, is answered as the LSP error it is)."""

    def deco(fn):
        @functools.wraps(fn)
        async def handler(ls: NncLanguageServer, params):
            try:
                result = fn(ls, params)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except Refused:
                raise
            except Exception as e:
                ls.internal_error(method, e)
                return default() if callable(default) else default

        server.feature(method, options)(handler) if options is not None else server.feature(method)(handler)
        return fn

    return deco


@guarded(T.INITIALIZE)
def _initialize(ls: NncLanguageServer, params: T.InitializeParams):
    ls.set_inlay_hints(_setting(params.initialization_options))


async def _pull_settings(ls: NncLanguageServer) -> None:
    """Ask the editor for the `nnc` section (clients that send no settings with the notification)."""
    caps = ls.client_capabilities.workspace
    if not (caps and caps.configuration):
        return
    result = await ls.workspace_configuration_async(T.ConfigurationParams(items=[T.ConfigurationItem(section="nnc")]))
    if result and isinstance(result[0], dict):
        ls.set_inlay_hints(_setting({"nnc": result[0]}))


@guarded(T.INITIALIZED)
async def _initialized(ls: NncLanguageServer, params: T.InitializedParams):
    await _pull_settings(ls)


@guarded(T.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def _configuration(ls: NncLanguageServer, params: T.DidChangeConfigurationParams):
    value = _setting(params.settings)
    if value is None:
        await _pull_settings(ls)
    else:
        ls.set_inlay_hints(value)


@guarded(T.TEXT_DOCUMENT_DID_OPEN)
async def _did_open(ls: NncLanguageServer, params: T.DidOpenTextDocumentParams):
    await ls.publish(params.text_document.uri)


@guarded(T.TEXT_DOCUMENT_DID_CHANGE)
def _did_change(ls: NncLanguageServer, params: T.DidChangeTextDocumentParams):
    ls.schedule(params.text_document.uri)


@guarded(T.TEXT_DOCUMENT_DID_SAVE)
def _did_save(ls: NncLanguageServer, params: T.DidSaveTextDocumentParams):
    ls.schedule(params.text_document.uri)


@guarded(T.TEXT_DOCUMENT_DID_CLOSE)
def _did_close(ls: NncLanguageServer, params: T.DidCloseTextDocumentParams):
    uri = params.text_document.uri
    timer = ls.timers.pop(uri, None)
    if timer is not None:
        timer.cancel()
    ls.cache.pop(uri, None)
    ls.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


@guarded(T.TEXT_DOCUMENT_HOVER)
async def _hover(ls: NncLanguageServer, params: T.HoverParams):
    return hover(await ls.analysis(params.text_document.uri), params.position)


@guarded(T.TEXT_DOCUMENT_INLAY_HINT, default=list)
async def _inlay(ls: NncLanguageServer, params: T.InlayHintParams):
    if not ls.inlay_hints_enabled:
        return []
    return inlay_hints(await ls.analysis(params.text_document.uri), params.range)


@guarded(T.TEXT_DOCUMENT_COMPLETION, T.CompletionOptions(trigger_characters=["=", " "]), default=list)
async def _completion(ls: NncLanguageServer, params: T.CompletionParams):
    doc = ls.workspace.get_text_document(params.text_document.uri)
    # completion reads only the text around the cursor: no check needed (the text may be mid-word)
    a = Analysis(doc.source, doc.version, CheckResult("", doc.source, None, []), SpecAST(), None, [], {},
                 ls.workspace.position_codec)
    return completion(a, params.position)


@guarded(T.TEXT_DOCUMENT_CODE_ACTION, T.CodeActionOptions(code_action_kinds=[T.CodeActionKind.QuickFix]),
         default=list)
async def _code_action(ls: NncLanguageServer, params: T.CodeActionParams):
    uri = params.text_document.uri
    return code_actions(await ls.analysis(uri), uri, params.range)


@guarded(T.TEXT_DOCUMENT_FORMATTING, default=list)
async def _formatting(ls: NncLanguageServer, params: T.DocumentFormattingParams):
    uri = params.text_document.uri
    return formatting(await ls.analysis(uri), ls.path(uri))


@guarded(T.TEXT_DOCUMENT_DOCUMENT_SYMBOL, default=list)
async def _symbols(ls: NncLanguageServer, params: T.DocumentSymbolParams):
    return document_symbols(await ls.analysis(params.text_document.uri))


@guarded(T.TEXT_DOCUMENT_DEFINITION)
async def _definition(ls: NncLanguageServer, params: T.DefinitionParams):
    uri = params.text_document.uri
    return definition(await ls.analysis(uri), uri, params.position)


@guarded(T.TEXT_DOCUMENT_PREPARE_RENAME)
async def _prepare_rename(ls: NncLanguageServer, params: T.PrepareRenameParams):
    return prepare_rename(await ls.analysis(params.text_document.uri), params.position)


@guarded(T.TEXT_DOCUMENT_RENAME, T.RenameOptions(prepare_provider=True))
async def _rename(ls: NncLanguageServer, params: T.RenameParams):
    uri = params.text_document.uri
    return rename(await ls.analysis(uri), uri, params.position, params.new_name)


class _QuietRefusals(logging.Filter):
    """pygls logs every error answer with a traceback; a refused rename is an answer, not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Refused))


def serve(debounce: float = DEBOUNCE_S) -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietRefusals())
    server.debounce = debounce
    server.start_io()
