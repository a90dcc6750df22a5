"""Diagnostics are data: a span, a code from one registry, a message and an optional help.

Rendering is a pure function of a diagnostic and the source text, so it has its own tests
(tests/test_diagnostics_golden.py) and every output format (text, json, github, sarif)
starts from the same objects.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable


@dataclass(frozen=True, order=True)
class Span:
    """1-based line and column; `end_col` is exclusive, as a caret line needs it."""

    line: int
    col: int
    end_line: int
    end_col: int

    @classmethod
    def point(cls, line: int, col: int) -> "Span":
        return cls(line, col, line, col + 1)


@dataclass(frozen=True)
class Code:
    name: str
    severity: str  # "error" or "warning"
    summary: str


# The registry of every diagnostic nnc emits. Codes are stable: tools (SARIF dashboards,
# `--warnings-as-errors`, editors) key on them, so rename nothing, only add.
CODES: dict[str, Code] = {
    c.name: c
    for c in [
        Code("syntax", "error", "The text does not follow the .nnspec grammar."),
        Code("io", "error", "The file could not be read."),
        Code("missing-model", "error", "A spec must start with `model NAME`."),
        Code("duplicate-statement", "error", "A statement that may appear once appears twice."),
        Code("statement-order", "error", "Statements are out of order."),
        Code("missing-input", "error", "A spec needs an `input` statement before its layers."),
        Code("bad-input", "error", "The input declaration is invalid (dtype, dims or options)."),
        Code("unknown-layer", "error", "The layer kind does not exist."),
        Code("unknown-option", "error", "The layer or block does not take this option."),
        Code("duplicate-option", "error", "An option is given twice (perhaps by an alias)."),
        Code("missing-option", "error", "A required option is missing."),
        Code("too-many-positional", "error", "More positional values than the kind takes."),
        Code("bad-value", "error", "An option's value has the wrong type or is out of range."),
        Code("duplicate-name", "error", "Two layers have the same name."),
        Code("unknown-block", "error", "The block kind does not exist (or a layer is given a '{ ... }' body)."),
        Code("bad-block", "error", "A block is malformed: empty, too few branches, a layer directly in a merge, ..."),
        Code("merge-mismatch", "error", "The branches of a merge block do not agree in shape or dtype."),
        Code("bad-input-rank", "error", "The layer does not accept a tensor of this rank."),
        Code("does-not-fit", "error", "A window (kernel or pool) is larger than its input."),
        Code("bad-dtype", "error", "The layer does not accept the dtype that flows into it."),
        Code("missing-vocab", "error", "An embedding does not know its vocabulary size."),
        Code("expect-failed", "error", "An `expect` assertion does not hold."),
        Code("bad-expect", "error", "An `expect` statement is malformed."),
        Code("bad-train", "error", "The train block is invalid."),
        Code("keras-only", "error", "A Keras layer, activation, option, loss or optimizer that nnc does not have."),
        Code("keras-call", "error", "A Keras call written as Python (Conv2D(32, (3, 3))) where an nnc line belongs."),
        Code("vocab-too-small", "error", "An embedding's vocab is smaller than its input's: larger ids have no row."),
        Code("param-budget", "error", "The model has more parameters than `--max-params` allows."),
        Code("dense-after-conv", "warning", "Dense on a rank-3/4 tensor right after a convolution."),
        Code("activation-after-softmax", "warning", "An activation follows a softmax."),
        Code("dropout-last", "warning", "Dropout as the last layer does nothing useful."),
        Code("loss-without-probabilities", "warning", "A probability loss on a model without a softmax or sigmoid output."),
        Code("softmax-single-unit", "warning", "Softmax over a single unit always outputs 1."),
        Code("loss-output-mismatch", "warning", "The loss does not suit the model's output shape."),
        Code("no-layers", "warning", "The model has no layers."),
        Code("vocab-unused", "warning", "A vocab is given where nothing uses it."),
    ]
}


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span
    help: str | None = None
    file: str = "<string>"
    severity: str = field(default="")

    def __post_init__(self) -> None:
        if self.code not in CODES:  # a programming error, caught by the test suite
            raise KeyError(f"diagnostic code {self.code!r} is not registered")
        if not self.severity:
            object.__setattr__(self, "severity", CODES[self.code].severity)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def sort_key(self) -> tuple:
        return (self.file, self.span.line, self.span.col, self.severity != "error", self.code)

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.span.line,
            "column": self.span.col,
            "end_line": self.span.end_line,
            "end_column": self.span.end_col,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "help": self.help,
        }


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def render(diag: Diagnostic, source: str | None, color: bool = False) -> str:
    """`FILE:LINE:COL: error: MESSAGE [code]`, the source line, a caret line, a help line."""
    sev = diag.severity
    head_sev = sev
    if color:
        head_sev = ("\x1b[1;31m" if sev == "error" else "\x1b[1;33m") + sev + "\x1b[0m"
    out = [f"{diag.file}:{diag.span.line}:{diag.span.col}: {head_sev}: {diag.message} [{diag.code}]"]
    lines = source_lines(source) if source is not None else ()
    if 1 <= diag.span.line <= len(lines):
        text = lines[diag.span.line - 1]
        # control characters (ESC sequences could retitle or clear the reader's terminal) are
        # shown as U+FFFD, one column each, so the carets still line up
        out.append(_CONTROL.sub("\N{REPLACEMENT CHARACTER}", text))
        out.append(caret_line(text, diag.span))
    if diag.help:
        out.append(f"help: {diag.help}")
    return "\n".join(out)


@lru_cache(maxsize=8)
def source_lines(source: str) -> tuple[str, ...]:
    """The lines of a spec, split once however many diagnostics it has (a str caches its hash,
    so each later lookup is constant time): rendering stays linear in the number of errors."""
    return tuple(source.splitlines())


def caret_line(text: str, span: Span) -> str:
    """Carets under [col, end_col) of `text`; tabs are copied so the carets line up."""
    start = max(span.col - 1, 0)
    if span.end_line == span.line:
        end = max(span.end_col - 1, start + 1)
    else:
        end = max(len(text.rstrip()), start + 1)
    prefix = "".join(ch if ch == "\t" else " " for ch in text[:start])
    return prefix + "^" * (end - start)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest spelling among `choices`, or None when nothing is close."""
    match = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def summarize_counts(diags: list[Diagnostic]) -> tuple[int, int]:
    errors = sum(1 for d in diags if d.is_error)
    return errors, len(diags) - errors
