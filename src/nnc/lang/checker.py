"""From AST to checked model: option binding, shape inference, warnings, `expect`, `train`.

Every problem becomes a Diagnostic at the exact span (the option when an option is wrong);
nothing is raised. Shape inference stops at the first layer whose shape rule fails (later
shapes would only repeat the same mistake), but option errors of later layers are still
reported, so one run shows every error a user can fix without re-running.

Blocks (`residual`, the merges, `repeat`) make the model a tree (`Model.body`) while
`Model.layers` stays the flat list of every layer in reading order: `_stack` reads a stack,
`_block` a block (its branches from the block's input, then the merge's shape check), and
`_repeat` checks each copy of its body on that copy's input, reporting a mistake once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

from nnc.lang.diagnostics import Diagnostic, Span, did_you_mean
from nnc.lang.kinds import (
    DROPOUT_KINDS,
    KINDS,
    RECURRENT_KINDS,
    Opt,
    ShapeError,
    fmt_shape,
    is_activation_kind,
    layer_activation,
)
from nnc.lang.model import (
    BLOCKS,
    Block,
    CheckResult,
    EarlyStopping,
    InputSpec,
    Layer,
    LRSchedule,
    Model,
    Node,
    OptimizerConfig,
    TrainConfig,
)
from nnc.lang import metric_rules as _metrics
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
    Value,
    parse,
)

DTYPES = ("float32", "int64")
LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy", "mse", "mae",
          "huber", "kl_divergence")
LOSS_ALIASES = {"mean_squared_error": "mse", "mean_absolute_error": "mae", "kld": "kl_divergence"}
PROBABILITY_LOSSES = LOSSES[:3] + ("kl_divergence",)
# a loss's options (`loss huber delta=2.0`), Keras's defaults, and the losses that take each
LOSS_OPTIONS = (Opt("delta", "float", 1.0, doc="huber's"), Opt("label_smoothing", "float", 0.0))
LOSSES_TAKING = {"delta": ("huber",), "label_smoothing": ("categorical_crossentropy", "binary_crossentropy")}
METRICS = _metrics.METRICS + ("loss",)
METRIC_ALIASES = _metrics.METRIC_ALIASES

_LR = Opt("lr", "float", None, aliases=("learning_rate",), minimum=0.0)
_WD = Opt("weight_decay", "float", 0.0, minimum=0.0)
_EPS = Opt("epsilon", "float", 1e-7, minimum=0.0)
# Keras's base-optimizer clipping options, on every optimizer (at most one of them; > 0)
CLIP_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm")
_CLIP = tuple(Opt(name, "float", None, minimum=0.0) for name in CLIP_OPTIONS)
_LR3 = Opt("lr", "float", 0.001, aliases=("learning_rate",), minimum=0.0)
_BETAS = (Opt("beta_1", "float", 0.9, minimum=0.0, maximum=1.0), Opt("beta_2", "float", 0.999, minimum=0.0, maximum=1.0))
# adam's and adamw's only (Keras's Nadam has none)
_AMSGRAD = Opt("amsgrad", "bool", False, doc="AMSGrad: divide by the running maximum of the second moment v")
# each optimizer's options with Keras 3's defaults (nnc.training.optim has the update rules)
OPTIMIZERS: dict[str, tuple[Opt, ...]] = {
    "sgd": (Opt("lr", "float", 0.01, aliases=("learning_rate",), minimum=0.0),
            Opt("momentum", "float", 0.0, minimum=0.0, maximum=1.0), _WD, Opt("nesterov", "bool", False)) + _CLIP,
    "rmsprop": (_LR3, Opt("rho", "float", 0.9, minimum=0.0, maximum=1.0),
                Opt("momentum", "float", 0.0, minimum=0.0, maximum=1.0), _EPS, _WD) + _CLIP,
    "adam": (_LR3,) + _BETAS + (_EPS, _WD, _AMSGRAD) + _CLIP,
    "adamw": (_LR3,) + _BETAS + (_EPS, Opt("weight_decay", "float", 0.004, minimum=0.0), _AMSGRAD) + _CLIP,
    "nadam": (_LR3,) + _BETAS + (_EPS, _WD) + _CLIP,
    "adagrad": (_LR3, Opt("initial_accumulator_value", "float", 0.1, minimum=0.0), _EPS, _WD) + _CLIP,
}
TRAIN_SCALARS: dict[str, Opt] = {
    "epochs": Opt("epochs", "int", 1, minimum=1),
    "batch_size": Opt("batch_size", "int", 32, minimum=1),
    "validation_split": Opt("validation_split", "float", 0.0, minimum=0.0, maximum=1.0),
    "seed": Opt("seed", "int", 0, minimum=0),
    "shuffle": Opt("shuffle", "bool", True),
}
EARLY_STOPPING = (
    Opt("monitor", "choice", "val_loss", choices=tuple(p + m for p in ("val_", "") for m in ("loss",) + _metrics.METRICS)),
    Opt("patience", "int", 0, minimum=0),
    Opt("min_delta", "float", 0.0, minimum=0.0),
    Opt("restore_best_weights", "bool", False),
)
# `lr_schedule KIND ...`: Keras's schedules (nnc.training.schedules), each kind's options with Keras's
# defaults; decay_steps has none in Keras (required). piecewise's lists: see _lr_schedule.
LR_SCHEDULES: dict[str, tuple[Opt, ...]] = {
    "cosine": (Opt("decay_steps", "int", doc="the steps to decay over", minimum=1),
               Opt("alpha", "float", 0.0, minimum=0.0), Opt("warmup_target", "float", None, minimum=0.0),
               Opt("warmup_steps", "int", 0, minimum=0)),
    "exponential": (Opt("decay_steps", "int", doc="the steps per power of decay_rate", minimum=1),
                    Opt("decay_rate", "float", doc="the factor per decay_steps", minimum=0.0),
                    Opt("staircase", "bool", False)),
    "piecewise": (Opt("boundaries", "steps", doc="the steps where the rate changes, like [1000, 2000]"),
                  Opt("values", "numbers", doc='the learning rates, one more than boundaries, like "0.1, 0.01, 0.001"')),
    "reduce_on_plateau": (Opt("monitor", "choice", "val_loss", choices=EARLY_STOPPING[0].choices),
                          Opt("factor", "float", 0.1, minimum=0.0, maximum=1.0), Opt("patience", "int", 10, minimum=0),
                          Opt("min_delta", "float", 1e-4, minimum=0.0), Opt("cooldown", "int", 0, minimum=0),
                          Opt("min_lr", "float", 0.0, minimum=0.0)),
}
# Keras's schedule names (lower case, no underscores): nnc's kind, or "" for one nnc lacks
_KERAS_SCHEDULES = {"cosinedecay": "cosine", "exponentialdecay": "exponential", "piecewiseconstantdecay": "piecewise",
                    "piecewiseconstant": "piecewise", "reducelronplateau": "reduce_on_plateau",
                    "polynomialdecay": "", "inversetimedecay": "", "cosinedecayrestarts": ""}
TRAIN_KEYS = ("loss", "optimizer", "lr_schedule", "metrics", "early_stopping", "class_weight") + tuple(TRAIN_SCALARS)


def _kn():
    """nnc.lang.keras_names, the tables of what Keras has: loaded only when a spec has a mistake to
    explain (a clean `nnc check` never needs them)."""
    from nnc.lang import keras_names

    return keras_names


class _Collector:
    def __init__(self, file: str):
        self.file = file
        self.diags: list[Diagnostic] = []

    def __call__(self, code: str, message: str, span: Span, help: str | None = None) -> None:
        self.diags.append(Diagnostic(code, message, span, help=help, file=self.file))


# --- option values ---------------------------------------------------------------------------


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _range_text(opt: Opt) -> str:
    lo, hi = opt.minimum, opt.maximum
    if lo is not None and hi is not None:
        return f"between {_fmt_num(lo)} and {_fmt_num(hi)} (excluded)"
    if lo is not None:
        return "a positive" if lo == 1 and opt.type == "int" else f"at least {_fmt_num(lo)}"
    return ""


def coerce(opt: Opt, val: Value) -> tuple[Any, str | None]:
    """The Python value of `val` for `opt`, or an error message that echoes what was received."""
    received = f"received: {opt.name}={val.text}"
    t = opt.type
    if t == "int":
        want = "a positive integer" if opt.minimum == 1 else "an integer" + (f" of at least {_fmt_num(opt.minimum)}" if opt.minimum else "")
        if val.kind != "int":
            return None, f"expected {want}, {received}"
        x = val.value
    elif t == "float":
        if val.kind not in ("int", "float"):
            return None, f"expected a number, {received}"
        x = float(val.value)
    elif t == "bool":
        if val.kind != "word" or val.value.lower() not in ("true", "false"):
            return None, f"expected true or false, {received}"
        return val.value.lower() == "true", None
    elif t == "choice":
        if val.kind not in ("word", "string") or val.value not in opt.choices:
            guess = did_you_mean(str(val.value), opt.choices) if val.kind in ("word", "string") else None
            msg = f"expected one of {', '.join(opt.choices)}, {received}"
            if guess:
                msg += f"; did you mean '{guess}'?"
            return None, msg
        return val.value, None
    elif t == "shape":
        if val.kind not in ("list", "tuple") or not val.value:
            return None, f"expected a shape like [7, 7, 64] (one -1 allowed), {received}"
        if any(d < 1 and d != -1 for d in val.value) or list(val.value).count(-1) > 1:
            return None, f"expected positive dims with at most one -1, {received}"
        return tuple(val.value), None
    elif t == "axes":
        if val.kind not in ("list", "tuple") or not val.value:
            return None, f"expected axes like [2, 1] (1-based, the batch not counted), {received}"
        if any(d < 1 for d in val.value) or len(set(val.value)) != len(val.value):
            return None, f"expected each axis once, counted from 1 (the batch is not an axis), {received}"
        return tuple(val.value), None
    elif t in ("pad1", "pad2"):
        n = int(t[-1])
        if val.kind == "int":
            x = ((val.value, val.value),) * n
        elif n == 2 and val.kind == "size" and len(val.value) == 2:
            x = tuple((d, d) for d in val.value)
        elif val.kind in ("list", "tuple") and len(val.value) == 2 * n:
            v = val.value
            x = tuple((v[2 * i], v[2 * i + 1]) for i in range(n))
        else:
            like = "1 or [1, 2] (begin, end)" if n == 1 else "1, 1x2 (rows x columns) or [top, bottom, left, right]"
            return None, f"expected {like}, {received}"
        if any(d < 0 for pair in x for d in pair):
            return None, f"expected amounts of at least 0, {received}"
        return x, None
    elif t in ("size1", "size2"):
        n = int(t[-1])
        if val.kind == "int":
            x = (val.value,) * n
        elif val.kind in ("size", "tuple", "list") and len(val.value) == n:
            x = tuple(val.value)
        else:
            like = "3" if n == 1 else "3 or 3x5"
            extra = " (a 1-D layer takes one number)" if n == 1 and val.kind in ("size", "tuple", "list") else ""
            return None, f"expected a size like {like}{extra}, {received}"
        if any(d < 1 for d in x):
            return None, f"expected a positive size, {received}"
        return x, None
    elif t in ("steps", "numbers"):
        # lr_schedule piecewise's lists: the language's [..] lists hold integers only, so numbers
        # may also be written as a quoted list: values="0.1, 0.01, 0.001" (or "[0.1, 0.01, 0.001]")
        like = "[1000, 2000]" if t == "steps" else '"0.1, 0.01, 0.001"'
        if val.kind == "list" and val.value:
            items = list(val.value)
        elif val.kind == "string":
            try:
                items = [float(x) for x in val.value.strip().strip("[]").replace(",", " ").split()]
            except ValueError:
                items = []
        else:
            items = []
        if not items:
            return None, f"expected a list like {like}, {received}"
        if t == "steps":
            if any(not math.isfinite(x) or x != int(x) or x < 0 for x in items):
                return None, f"expected steps (integers of at least 0), {received}"
            return tuple(int(x) for x in items), None
        if any(not math.isfinite(x) or x < 0 for x in items):
            return None, f"expected learning rates of at least 0, {received}"
        return tuple(float(x) for x in items), None
    else:  # pragma: no cover
        raise ValueError(t)
    lo, hi = opt.minimum, opt.maximum
    if (lo is not None and x < lo) or (hi is not None and x >= hi):
        if t == "int":
            return None, f"expected {want}, {received}"
        return None, f"expected a number {_range_text(opt)}, {received}"
    return x, None


def bind(args: list, positional: tuple[str, ...], opts: tuple[Opt, ...], owner: str, owner_span: Span,
         report: _Collector) -> tuple[dict[str, Any], bool]:
    """Positional values and key=value options to a dict of canonical names with defaults.

    Returns (values, ok). Reports unknown, duplicate, missing and ill-typed options."""
    by_name = {o.name: o for o in opts}
    alias = {a: o.name for o in opts for a in o.aliases}
    given: dict[str, Span] = {}
    guessed: set[str] = set()  # options a misspelling was reported for: not also "missing"
    values: dict[str, Any] = {}
    ok = True
    pos = 0
    seen_option = False
    for arg in args:
        if isinstance(arg, Option):
            seen_option = True
            key = alias.get(arg.key, arg.key)
            if key not in by_name:
                if arg.key in _kn().KERAS_OPTIONS_NOT_IN_NNC:
                    report("keras-only", f"Keras's {arg.key} option is not in nnc", arg.key_span,
                           help=_keras_option_help(arg, owner, by_name))
                    continue
                names = ", ".join(by_name) if by_name else "no options"
                # an option of other kinds (dilation on conv2d_transpose): said as such, never a typo
                elsewhere = [k for k, kd in KINDS.items()
                             if any(arg.key == o.name or arg.key in o.aliases for o in kd.options)]
                if elsewhere:
                    report("unknown-option", f"{owner} has no option '{arg.key}': it is an option of "
                           f"{', '.join(elsewhere[:6])}" + (", ..." if len(elsewhere) > 6 else ""),
                           arg.key_span, help=f"{owner} takes: {names}")
                    continue
                guess = did_you_mean(arg.key, list(by_name) + list(alias))
                if guess:
                    guessed.add(alias.get(guess, guess))
                report("unknown-option", f"{owner} has no option '{arg.key}'" + (f"; did you mean '{guess}'?" if guess else ""),
                       arg.key_span, help=f"{owner} takes: {names}")
                continue  # reported; the rest of the layer can still be checked
            span, val = arg.span, arg.value
        else:
            if pos >= len(positional):
                want = f"takes {len(positional)} positional value" + ("" if len(positional) == 1 else "s")
                if not positional:
                    want = "takes no positional values"
                report("too-many-positional", f"{owner} {want}, received '{arg.text}'", arg.span,
                       help="write the others as key=value" if by_name else None)
                continue
            if seen_option:
                report("syntax", f"positional value '{arg.text}' after a key=value option", arg.span,
                       help="positional values come first")
                ok = False
                continue
            key = positional[pos]
            pos += 1
            span, val = arg.span, arg
        if key in given:
            first = f"first given at line {given[key].line}, column {given[key].col}"
            named_after_positional = (isinstance(arg, Option) and key in positional[:pos]
                                      and not any(isinstance(a, Option) and alias.get(a.key, a.key) == key
                                                  for a in args[:next(i for i, b in enumerate(args) if b is arg)]))
            if named_after_positional:  # `depthwise_conv2d 16 kernel=3`
                first = f"{owner}'s positional value is its {key}, given first at column {given[key].col}"
                if owner.startswith("depthwise_conv"):
                    first += ("; a depthwise convolution has no filters: it outputs the input's channels "
                              "x depth_multiplier")
            report("duplicate-option", f"{owner} option '{key}' is given twice", span, help=first)
            if not named_after_positional:
                continue
            # the named value is the one meant: the rest is checked with it (no error from the other)
        given[key] = span
        keras_only = _keras_only_value(by_name[key], val)
        if keras_only:
            report("keras-only", keras_only[0], val.span, help=keras_only[1])
            ok = False
            continue
        x, err = coerce(by_name[key], val)
        if err:
            report("bad-value", f"{owner}: {err}", val.span)
            ok = False
            continue
        values[key] = x
    for o in opts:
        if o.name in values:
            continue
        if o.required and o.name not in given:
            if o.name in guessed:
                ok = False
                continue
            how = f"{o.name}=..." if o.name not in positional else f"a {o.name} value"
            report("missing-option", f"{owner} needs {how}" + (f" ({o.doc})" if o.doc else ""), owner_span,
                   help=_example(owner, o))
            ok = False
        elif not o.required:
            default = o.default
            if o.type in ("size1", "size2") and isinstance(default, int):
                default = (default,) * int(o.type[-1])
            elif o.type in ("pad1", "pad2") and isinstance(default, int):
                default = ((default, default),) * int(o.type[-1])
            values[o.name] = default
    return values, ok


def _keras_option_help(arg: Option, owner: str, by_name: dict[str, Opt]) -> str:
    """What nnc offers instead of a Keras option it does not have."""
    key, val = arg.key, arg.value
    takes = f"{owner} takes: {', '.join(by_name)}" if by_name else f"{owner} takes no options"
    if key == "name" and val.kind in ("word", "string"):
        return f"a layer's name is written before its kind: {val.value}: {owner} ..."
    if key in ("input_shape", "batch_input_shape") and val.kind in ("list", "tuple"):
        dims = val.value[1:] if key == "batch_input_shape" else val.value
        return f"the shape goes in the input statement: input x: float32[{', '.join(map(str, dims))}]"
    if key == "axis" and owner not in ("batchnorm", "layernorm"):
        return takes
    advice = _kn().KERAS_OPTIONS_NOT_IN_NNC[key]
    return f"{advice}; {takes}" if advice else takes


# option values Keras's twin takes and nnc does not (UpSampling2D's interpolations, Bidirectional's
# merge_mode=None): said to be Keras's, never a typo of one of nnc's values
_KERAS_VALUES_NOT_IN_NNC = {
    **{("interpolation", w): "nnc upsamples by repeating (nearest) or linearly (bilinear)"
       for w in ("bicubic", "lanczos3", "lanczos5", "area")},
    ("merge", "none"): "Keras's merge_mode=None returns the two directions as a list; an nnc layer has one "
                       "output: merge=concat joins them",
}


def _keras_only_value(opt: Opt, val: Value) -> tuple[str, str] | None:
    """(message, help) for a value Keras has and nnc does not: an activation, a loss."""
    if opt.type != "choice" or val.kind not in ("word", "string") or val.value in opt.choices:
        return None
    word = str(val.value)
    if "relu" in opt.choices and word.lower() in _kn().KERAS_ACTIVATIONS_NOT_IN_NNC:
        advice = _kn().KERAS_ACTIVATIONS_NOT_IN_NNC[word.lower()]
        acts = f"nnc's activations: {', '.join(opt.choices)}"
        return f"Keras's activation '{word}' is not in nnc", f"{advice}; {acts}" if advice else acts
    if (opt.name, word.lower()) in _KERAS_VALUES_NOT_IN_NNC:
        advice = _KERAS_VALUES_NOT_IN_NNC[opt.name, word.lower()]
        return (f"Keras's {opt.name}={word} is not in nnc",
                f"{advice}; nnc's {opt.name} values: {', '.join(opt.choices)}")
    if opt.name == "loss" and word.lower() in _kn().KERAS_LOSSES_NOT_IN_NNC:
        advice = _kn().KERAS_LOSSES_NOT_IN_NNC[word.lower()]
        losses = f"nnc's losses: {', '.join(LOSSES)}"
        return f"Keras's loss '{word}' is not in nnc", f"{advice}; {losses}" if advice else losses
    return None


def _example(owner: str, o: Opt) -> str:
    examples = {"filters": "conv2d 32 kernel=3", "kernel": f"{owner} ... kernel=3", "pool": f"{owner} 2",
                "units": f"{owner} 64", "rate": "dropout 0.5", "dim": "embedding 32", "count": "repeat 3 { ... }"}
    return "for example: " + examples.get(o.name, f"{owner} {o.name}=...")


# --- the checker ---------------------------------------------------------------------------


def check_source(text: str, file: str = "<string>") -> CheckResult:
    """Parse and check a spec's text. Never raises for any input text."""
    report = _Collector(file)
    ast = parse(text, file)
    report.diags.extend(ast.syntax_errors)
    model = _Checker(ast, report, text, file).run()
    diags = sorted(report.diags, key=Diagnostic.sort_key)
    if any(d.is_error for d in diags):
        model = None
    return CheckResult(file, text, model, diags)


MAX_SPEC_CHARS = 64 * 2**20  # a 10,000-layer spec is about 250 KB


def check_file(path: str) -> CheckResult:
    """Read and check a spec file; an unreadable file is an `io` diagnostic, not an exception."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # a BOM (Windows editors) is not part of the spec
            text = f.read(MAX_SPEC_CHARS + 1)  # bounded: /dev/zero or a runaway file is not read forever
        if len(text) > MAX_SPEC_CHARS:
            raise ValueError(f"it is larger than {MAX_SPEC_CHARS // 2**20} MiB, which no spec needs")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        d = Diagnostic("io", f"cannot read {path}: {reason}", Span(1, 1, 1, 1), file=path)
        return CheckResult(path, "", None, [d])
    result = check_source(text, path)
    if result.model is not None:
        result.model.path = path
    return result


class _Checker:
    def __init__(self, ast: SpecAST, report: _Collector, text: str, file: str):
        self.ast = ast
        self.report = report
        self.text = text
        self.file = file

    def run(self) -> Model | None:
        r = self.report
        stmts = self.ast.statements
        had_syntax = bool(self.ast.syntax_errors)
        model_decl: ModelDecl | None = None
        input_decl: InputDecl | None = None
        layers: list[LayerStmt | BlockStmt] = []  # the top-level steps
        expects: list[ExpectStmt] = []
        train: TrainBlock | None = None
        for i, st in enumerate(stmts):
            if isinstance(st, ModelDecl):
                if model_decl is not None:
                    r("duplicate-statement", "a spec has one `model` statement", st.span,
                      help=f"the first is at line {model_decl.span.line}")
                elif i != 0 and not had_syntax:
                    r("statement-order", "`model NAME` must be the first statement", st.span)
                model_decl = model_decl or st
            elif isinstance(st, InputDecl):
                if input_decl is not None:
                    r("duplicate-statement", "nnc models have one input", st.span,
                      help=f"the first is at line {input_decl.span.line}")
                    continue
                if layers:
                    r("statement-order", "the input must be declared before the layers", st.span,
                      help=f"the first layer is at line {layers[0].span.line}")
                input_decl = st
            elif isinstance(st, (LayerStmt, BlockStmt)):
                layers.append(st)
            elif isinstance(st, ExpectStmt):
                expects.append(st)
            elif isinstance(st, TrainBlock):
                if train is not None:
                    r("duplicate-statement", "a spec has one train block", st.span,
                      help=f"the first is at line {train.span.line}")
                    continue
                train = st
        first = Span.point(1, 1)
        if model_decl is None and not had_syntax:
            r("missing-model", "a spec must start with `model NAME`", stmts[0].span if stmts else first,
              help="add a first line like: model my_model")
        inp = self._input(input_decl) if input_decl else None
        if input_decl is None and not had_syntax:
            r("missing-input", "the spec declares no input", layers[0].span if layers else first,
              help="add a line like: input image: float32[28, 28, 1]")
        syntax_lines = [d.span.line for d in self.ast.syntax_errors]
        built = self._layers(layers, inp, syntax_lines, input_decl.span.line if input_decl else 0)
        train_cfg = self._train(train) if train else None
        if built is None or inp is None:
            return None
        model = Model(model_decl.name if model_decl else "model", inp, built[0], train_cfg,
                      hashlib.sha256(self.text.encode("utf-8")).hexdigest(), body=built[1], source=self.text)
        if had_syntax:
            # A dropped line may have held a layer or the loss: no warnings, and an expect only
            # where every dropped line comes after it and after the last layer (a broken train block).
            first = min(syntax_lines)
            last_layer = layers[-1].span.end_line if layers else 0
            for e in expects:
                if first > max(e.span.line, last_layer):
                    self._expect(e, model)
            return model
        if not layers and input_decl is not None:
            r("no-layers", "the model has no layers", input_decl.span)
        self._warnings(model, layers, train)
        if train is not None and train_cfg is not None:
            self._train_fit(model, train)
        for e in expects:
            self._expect(e, model)
        return model

    # -- input

    def _input(self, d: InputDecl) -> InputSpec | None:
        r = self.report
        ok = True
        if d.dtype not in DTYPES:
            guess = did_you_mean(d.dtype, DTYPES)
            r("bad-input", f"unknown dtype '{d.dtype}'" + (f"; did you mean '{guess}'?" if guess else ""), d.dtype_span,
              help="float32 for images, series and features; int64 for token ids")
            ok = False
        for v in d.dims:
            if v.value < 1:
                r("bad-input", f"input dimensions must be positive integers, received {v.text}", v.span)
                ok = False
        vocab_opt = Opt("vocab", "int", None, minimum=1)
        vals, bound = bind(d.args, (), (vocab_opt,), "input", d.span, r)
        ok = ok and bound
        vocab = vals.get("vocab")
        if ok and vocab is not None and d.dtype != "int64":
            arg = next(a for a in d.args if isinstance(a, Option))
            r("vocab-unused", "vocab only applies to int64 token inputs", arg.span)
        if not ok:
            return None
        return InputSpec(d.name, d.dtype, tuple(v.value for v in d.dims), vocab)

    # -- layers

    def _layers(self, stmts: list, inp: InputSpec | None, syntax_lines: list[int] = (),
                after_line: int = 0) -> tuple[list[Layer], list[Node]] | None:
        """Bind every layer's options and infer shapes, through blocks (residual, merges, repeat).
        Returns (every layer in reading order, the tree of steps), or None after an error.
        A line the parser dropped for a syntax error after the input may have been a layer, so
        shapes past it are unknown: options are still checked there, shapes are not (they would
        report mistakes the user did not make)."""
        self._inp = inp
        self._broken = min((l for l in syntax_lines if l > after_line), default=None)
        self._syntax_lines = list(syntax_lines)
        self._counts: dict[str, int] = {}  # layer kinds and block kinds: the N of kind_N
        self._names: dict[str, Span] = {}
        self._flat: list[Layer] = []
        self._ok = inp is not None
        self._feeder: dict[int, Node | None] = {}  # id(layer) -> the step it reads (None: the input)
        self._stmt_of: dict[int, LayerStmt] = {}  # id(layer) -> its statement (copies of a repeat share one)
        self._in_repeat = 0
        self._depth = 0
        shape = inp.shape if inp else None
        dtype = inp.dtype if inp else None
        body, _, _ = self._stack(stmts, shape, dtype, None)
        return (self._flat, body) if self._ok else None

    def _stack(self, stmts: list, shape, dtype, feeder: Node | None) -> tuple[list[Node], Any, Any]:
        """A stack of steps read top to bottom from `shape`; shape None: unknown (an earlier error)."""
        nodes: list[Node] = []
        for st in stmts:
            if not self._depth:
                self._top_broken = self._has_syntax(st)
            if isinstance(st, BlockStmt) or st.kind in BLOCK_WORDS:
                node, shape, dtype = self._block(st, shape, dtype, feeder)
            else:
                node, shape, dtype = self._layer(st, shape, dtype, feeder)
            if node is not None:
                nodes.append(node)
                feeder = node
        return nodes, shape, dtype

    def _layer(self, st: LayerStmt, shape, dtype, feeder: Node | None) -> tuple[Layer | None, Any, Any]:
        r = self.report
        inp = self._inp
        spec = KINDS.get(st.kind)
        if spec is None:
            self._unknown_kind(st)
            self._ok = False
            return None, None, dtype
        self._counts[st.kind] = self._counts.get(st.kind, 0) + 1
        name = st.name or f"{st.kind}_{self._counts[st.kind]}"
        name_span = st.name_span or st.kind_span
        if st.name and self._in_repeat:
            r("duplicate-name", f"'{st.name}' names a layer inside repeat: each copy would have that name",
              st.name_span, help=f"leave the name out: the copies are numbered ({st.kind}_1, {st.kind}_2, ...)")
            self._ok = False
        elif not self._claim(name, name_span, "layer"):
            self._ok = False
        opts, bound = bind(st.args, spec.positional, spec.options, st.kind, st.kind_span, r)
        if not bound:
            self._ok = False
            return None, None, dtype
        if self._broken is not None and st.span.line > self._broken:
            self._ok = False
            shape = None
        if shape is None:
            return None, None, dtype  # an earlier step failed: its output shape is unknown
        if spec.accepts_dtype != dtype:
            if dtype == "int64":
                r("bad-dtype", f"{st.kind} received the int64 token ids of input '{inp.name}' "
                  f"[{', '.join(map(str, shape))}]; only an embedding reads token ids", st.kind_span,
                  help="token ids go through an embedding first: embedding 32")
            else:
                r("bad-dtype", f"{st.kind} expects int64 token ids, but {dtype} values flow in", st.kind_span,
                  help="an embedding must come first, right after an int64 input" if feeder is not None else
                  "declare the input as int64[...] vocab=N")
            self._ok = False
            return None, None, dtype
        if st.kind == "embedding" and opts["vocab"] is None:
            if inp.vocab is None:
                r("missing-vocab", f"embedding needs the vocabulary size, but input '{inp.name}' declares no vocab "
                  "and the embedding has no vocab= option", st.kind_span,
                  help=f"add vocab=N to the input (input {inp.name}: int64[...] vocab=10000) or to the embedding")
                self._ok = False
                return None, None, dtype
            opts["vocab"] = inp.vocab
        elif st.kind == "embedding" and inp.vocab is not None and opts["vocab"] < inp.vocab:
            self._vocab_too_small(st, opts["vocab"], inp)
        try:
            spec.check_input(opts, shape)
            new_shape = spec.output_shape(opts, shape)
            weights = spec.weight_shapes(opts, shape)
        except ShapeError as e:
            r(e.code, e.message, self._option_span(st, e.option), help=self._sequence_help(e, shape, feeder) or e.help)
            self._ok = False
            return None, None, dtype
        layer = Layer(name, st.kind, opts, shape, new_shape, dtype, weights, st.span, len(self._flat))
        self._flat.append(layer)
        self._feeder[id(layer)] = feeder
        self._stmt_of[id(layer)] = st
        return layer, new_shape, spec.output_dtype(opts, dtype)

    def _vocab_too_small(self, st: LayerStmt, vocab: int, inp: InputSpec) -> None:
        """An embedding with fewer rows than the input has token ids: ids past its vocab have no row
        (Keras fails on them, or reads zeros on a GPU)."""
        ids = f"id {vocab}" if vocab == inp.vocab - 1 else f"ids {vocab} to {inp.vocab - 1}"
        self.report("vocab-too-small", f"embedding vocab={vocab} is smaller than input '{inp.name}' vocab={inp.vocab}: "
                    f"token {ids} would be out of range", self._option_span(st, "vocab"),
                    help=f"use vocab={inp.vocab}, or leave it out: an embedding's vocab defaults to the input's")
        self._ok = False

    def _sequence_help(self, e: ShapeError, shape: tuple[int, ...], feeder: Node | None) -> str | None:
        """A layer that needs [steps, features] after a recurrent layer that returns only its last
        step: the help names return_sequences=true on that layer, where to write it."""
        if e.code != "bad-input-rank" or len(shape) != 1 or feeder is None:
            return None
        src = last_layer([feeder])
        while src is not None and (src.kind in DROPOUT_KINDS or is_activation_kind(src.kind)
                                   or src.kind in ("batchnorm", "layernorm")):
            src = _step_before(self._feeder, src)
        if src is None or src.kind not in RECURRENT_KINDS or src.options.get("return_sequences"):
            return None
        st = self._stmt_of[id(src)]
        steps, units = src.input_shape[0], src.output_shape[-1]
        at = _option_span_of(st, "return_sequences")
        if at is not None:
            where = f"change it to return_sequences=true at line {at.line}, column {at.col}"
        else:
            where = f"add return_sequences=true at the end of line {st.span.line}: {self._head_text(st)} return_sequences=true"
        return (f"{src.name} returns only its last step ({units} values); to pass all {steps} steps "
                f"([{steps}, {units}]) on, {where}")

    def _unknown_kind(self, st: LayerStmt) -> None:
        """A kind nnc does not have: a Keras call written as Python, a Keras name nnc lacks (said
        so, never taken for a typo), a Keras class name of an nnc kind, or a misspelling."""
        r = self.report
        kind = st.kind
        lines = self.text.split("\n")
        line = lines[st.kind_span.line - 1] if st.kind_span.line <= len(lines) else ""
        if line[st.kind_span.end_col - 1:].lstrip().startswith("("):  # Dense(10) parses as a kind and a tuple
            call = _kn().translate(line.split("#", 1)[0])
            if call is not None:
                from nnc.lang.parser import call_columns

                first, end = call_columns(line)
                r("keras-only" if call.not_in_nnc else "keras-call", call.message(),
                  Span(st.kind_span.line, first, st.kind_span.line, end), help=call.help())
                return
        keras = _kn().keras_layer_not_in_nnc(kind)
        if keras is not None:
            r("keras-only", f"Keras's {keras} is not in nnc", st.kind_span,
              help=_kn().KERAS_LAYERS_NOT_IN_NNC[keras] or f"layer kinds: {', '.join(KINDS)}")
            return
        if kind.lower() in _kn().KERAS_ACTIVATIONS_NOT_IN_NNC:
            advice = _kn().KERAS_ACTIVATIONS_NOT_IN_NNC[kind.lower()]
            acts = "nnc's activation layers: " + ", ".join(k for k in KINDS if is_activation_kind(k))
            r("keras-only", f"Keras's activation '{kind}' is not in nnc", st.kind_span,
              help=f"{advice}; {acts}" if advice else acts)
            return
        guess = _kn().COMMON_NAMES_TO_KIND.get(kind.lower()) or did_you_mean(kind, KINDS)
        help = None
        if kind in TRAIN_KEYS:
            help = f"'{kind}' belongs inside a train {{ ... }} block"
        elif kind in ("model", "input", "expect", "train"):
            help = f"'{kind}' is a statement keyword; check the rest of the line"
        elif guess in RECURRENT_KINDS and kind.lower().startswith("bi"):
            help = f"nnc writes a bidirectional layer as {guess} UNITS bidirectional=true"
        elif kind.lower() in _kn().KERAS_TO_KIND_LOWER:
            help = f"nnc's kinds are lowercase words: Keras's {kind} is {guess} (LANGUAGE.md lists each kind's Keras twin)"
        r("unknown-layer", f"unknown layer '{kind}'" + (f"; did you mean '{guess}'?" if guess else ""),
          st.kind_span, help=help or f"layer kinds: {', '.join(KINDS)}")

    # -- blocks

    def _has_syntax(self, st) -> bool:
        if not self._syntax_lines:  # the usual case: no generator set up for each of 10,000 layers
            return False
        return any(st.span.line <= line <= st.span.end_line for line in self._syntax_lines)

    def _claim(self, name: str, span: Span, what: str) -> bool:
        """Names are unique among layers and blocks alike (Keras's layer names)."""
        if name in self._names:
            self.report("duplicate-name", f"{what} name '{name}' is already used at line {self._names[name].line}",
                        span, help=f"give this {what} another name (NAME: kind ...)")
            return False
        self._names[name] = span
        return True

    def _head_text(self, st) -> str:
        lines = self.text.split("\n")
        line = lines[st.span.line - 1] if st.span.line <= len(lines) else ""
        return line[st.span.col - 1: st.span.end_col - 1 if st.span.end_line == st.span.line else None].strip()

    def _block(self, st, shape, dtype, feeder: Node | None) -> tuple[Block | None, Any, Any]:
        """A block: its option, its inside (through _stack), and the merge of its branches."""
        r = self.report
        kind = st.kind
        broken = self._top_broken  # a syntax error in the statement: its structure may be cut short
        if not isinstance(st, BlockStmt):  # a block word with no '{'
            if st.span.line + 1 not in self._syntax_lines:  # a '{' alone on the next line is reported there
                head = self._head_text(st)
                r("syntax", f"expected '{{' after '{head}'", Span.point(st.span.end_line, st.span.end_col),
                  help=f"a block opens on its first line: {head} {{ ... }}, its statements inside")
            self._ok = False
            return None, None, dtype
        if kind not in BLOCKS and kind != "branch":
            if kind == "train":
                r("bad-block", "a train block belongs at the top level of the spec, not inside a block",
                  st.kind_span, help="write train { ... } after the layers")
            elif kind in KINDS:
                r("unknown-block", f"{kind} is a layer, not a block: it takes no '{{ ... }}'",
                  st.open_span or st.kind_span, help=f"blocks: {', '.join(BLOCKS)}")
            else:
                guess = did_you_mean(kind, BLOCKS + ("branch",))
                r("unknown-block", f"unknown block '{kind}'" + (f"; did you mean '{guess}'?" if guess else ""),
                  st.kind_span, help=f"blocks: {', '.join(BLOCKS)}; branch {{ ... }} goes inside a merge block")
            self._ok = False
            self._depth += 1
            self._stack(st.body, None, None, None)  # its own mistakes are still reported
            self._depth -= 1
            return None, None, dtype
        if kind == "branch":
            if not broken:
                r("bad-block", "branch { ... } belongs directly inside a merge block (add, concat, ...)", st.kind_span,
                  help="for x + f(x) write residual { ... }; for parallel stacks add { branch { ... } branch { ... } }")
            self._ok = False
            self._depth += 1
            self._stack(st.body, shape, dtype, feeder)
            self._depth -= 1
            return None, None, dtype
        self._counts[kind] = self._counts.get(kind, 0) + 1
        name = st.name or f"{kind}_{self._counts[kind]}"
        if st.name and self._in_repeat:
            r("duplicate-name", f"'{st.name}' names a block inside repeat: each copy would have that name",
              st.name_span, help=f"leave the name out: the copies are numbered ({kind}_1, {kind}_2, ...)")
            self._ok = False
        elif not self._claim(name, st.name_span or st.kind_span, "block"):
            self._ok = False
        positional, options = _BLOCK_OPTIONS.get(kind, ((), ()))
        opts, bound = bind(st.args, positional, options, kind, st.kind_span, r)
        if not bound:
            self._ok = False
        if not st.body and not broken:
            r("bad-block", _empty_message(kind, st), st.kind_span, help=_empty_help(kind))
            self._ok = False
        self._depth += 1
        try:
            if kind == "repeat":
                return self._repeat(st, name, opts.get("count") if bound else None, shape, dtype, feeder)
            if kind == "residual":
                nodes, out, odt = self._stack(st.body, shape, dtype, feeder)
                branches, outs = [[], nodes], [(shape, dtype), (out, odt)]
            else:
                branches, outs = self._branches(st, kind, shape, dtype, feeder, broken)
        finally:
            self._depth -= 1
        if not st.body or not bound or shape is None:
            return None, None, dtype
        merged = self._merge(st, name, kind, opts, outs, shape)
        if merged is None:
            return None, None, dtype
        block = Block(name, kind, opts, branches, shape, merged[0], st.span)
        return block, merged[0], merged[1]

    def _repeat(self, st: BlockStmt, name: str, times: int | None, shape, dtype, feeder):
        """The body `times` times in sequence. Each copy is checked on its own input shape; a
        mistake is reported once, the copy it first shows in named when that is not the first."""
        r = self.report
        inner = _expanded(st.body)
        if times is not None and times * inner > MAX_LAYERS:
            r("bad-value", f"repeat {times:,} makes {times * inner:,} layers of its body's {inner:,}: "
              f"more than nnc's limit of {MAX_LAYERS:,}", _arg_span(st, 0) or st.kind_span,
              help="a spec of that size is better split; or lower the count")
            self._ok = False
            times = None
        start = shape
        nodes: list[Node] = []
        self._in_repeat += 1
        try:
            for k in range(1, (times or 1) + 1):
                if k == 1:
                    got, shape, dtype = self._stack(st.body, shape, dtype, feeder)
                else:
                    outer, self.report = self.report, _Collector(self.file)
                    try:
                        got, shape, dtype = self._stack(st.body, shape, dtype, feeder)
                    finally:
                        quiet, self.report = self.report, outer
                    seen = {(d.code, d.span) for d in outer.diags}
                    for d in quiet.diags:
                        if (d.code, d.span) not in seen:
                            seen.add((d.code, d.span))
                            outer(d.code, f"{d.message} (in copy {k} of {name})", d.span, help=d.help)
                nodes += got
                feeder = got[-1] if got else feeder
                if shape is None:
                    break
        finally:
            self._in_repeat -= 1
        if times is None or shape is None or start is None or not st.body:
            return None, None, dtype
        return Block(name, "repeat", {"times": times}, [nodes], start, shape, st.span), shape, dtype

    def _branches(self, st: BlockStmt, kind: str, shape, dtype, feeder, broken: bool):
        r = self.report
        branches: list[list[Node]] = []
        outs: list[tuple] = []
        stray = False
        for sub in st.body:
            if sub.kind == "branch" and isinstance(sub, BlockStmt):
                if sub.name:
                    r("bad-block", f"a branch takes no name: name the {kind} block, or the layers inside the branch",
                      sub.name_span, help=f"write: {sub.name}: {kind} {{ ... }}")
                    self._ok = False
                if sub.args:
                    bind(sub.args, (), (), "branch", sub.kind_span, r)
                    self._ok = False
                nodes, out, odt = self._stack(sub.body, shape, dtype, feeder)
                branches.append(nodes)
                outs.append((out, odt))
            elif sub.kind == "branch":
                self._block(sub, None, None, None)  # `branch` without '{'
                stray = True
            else:
                if not broken:
                    r("bad-block", f"{sub.kind} is directly inside {kind}: a merge block holds only branch {{ ... }}",
                      sub.kind_span, help=f"put it in a branch: {kind} {{ branch {{ {sub.kind} ... }} branch {{ ... }} }}"
                      + ("" if kind != "add" else "; for x + f(x) write residual { ... }"))
                self._ok = False
                stray = True
                self._stack([sub], None, None, None)  # its own mistakes are still reported
        n = len(branches)
        if st.body and not broken and not stray:
            if kind == "subtract" and n != 2:
                r("bad-block", f"subtract takes exactly two branches (the first minus the second), received {n}",
                  st.kind_span, help="write: subtract { branch { ... } branch { ... } }")
            elif n < 2:
                r("bad-block", f"{kind} has one branch: a merge block joins two or more", st.kind_span,
                  help=f"add the other branch; branch {{ }} is the block's input itself: "
                  f"{kind} {{ branch {{ }} branch {{ ... }} }}")
        if n < 2 or (kind == "subtract" and n != 2):
            self._ok = False
            outs = [(None, None)]
        return branches, outs

    def _merge(self, st: BlockStmt, name: str, kind: str, opts: dict, outs: list[tuple], st_input: tuple[int, ...]):
        """(output shape, dtype) of the merge of the branches' outputs, or None after reporting why not."""
        r = self.report
        if any(shape is None for shape, _ in outs):
            return None
        shapes = [shape for shape, _ in outs]
        dtypes = [dt for _, dt in outs]
        roles = _roles(st, kind)
        if len(set(dtypes)) > 1:
            r("merge-mismatch", f"the branches of {name} carry different dtypes: "
              + ", ".join(f"{role} {dt}" for role, dt in zip(roles, dtypes)), st.kind_span,
              help="int64 token ids go through an embedding before they are merged")
            self._ok = False
            return None
        if kind == "concat":
            axis = opts["axis"]
            ranks = sorted({len(s) for s in shapes})
            rank = len(shapes[0])
            if len(ranks) == 1 and not (-rank <= axis <= -1 or 1 <= axis <= rank):
                why = "axis 0 is the batch" if axis == 0 else f"its branches output rank-{rank} tensors"
                r("bad-value", f"concat: axis={axis} is out of range: {why}", _option_span_of(st, "axis") or st.kind_span,
                  help=f"axes count as Keras counts them: 1 to {rank} (the batch is 0), or -1 to -{rank} from the last; "
                  "-1 (the default) joins the channels")
                self._ok = False
                return None
            a = axis - 1 if axis > 0 else rank + axis
            rest = {s[:a] + s[a + 1:] for s in shapes}
            if len(ranks) > 1 or len(rest) > 1:
                listed = ", ".join(f"{role} outputs {_dims(s)}" for role, s in zip(roles, shapes))
                r("merge-mismatch", f"the branches of {name} must agree in every axis but axis {axis}: {listed}",
                  st.kind_span, help=_mismatch_help(kind, shapes, roles, a, st_input))
                self._ok = False
                return None
            s0 = shapes[0]
            return s0[:a] + (sum(s[a] for s in shapes),) + s0[a + 1:], dtypes[0]
        if len(set(shapes)) > 1:
            if kind == "residual":
                msg = (f"residual adds its input to its body's output, but their shapes differ: the input is "
                       f"{_dims(shapes[0])}, the body outputs {_dims(shapes[1])}")
            else:
                listed = ", ".join(f"{role} outputs {_dims(s)}" for role, s in zip(roles, shapes))
                msg = f"the branches of {name} must have the same shape for {kind}: {listed}"
            r("merge-mismatch", msg, st.kind_span, help=_mismatch_help(kind, shapes, roles, None, st_input))
            self._ok = False
            return None
        return shapes[0], dtypes[0]

    def _option_span(self, st: LayerStmt, option: str | None) -> Span:
        if option is not None:
            spec = KINDS[st.kind]
            names = {option} | set(spec.option(option).aliases)
            pos = list(spec.positional)
            p = 0
            for a in st.args:
                if isinstance(a, Option) and a.key in names:
                    return a.span
                if isinstance(a, Value):
                    if p < len(pos) and pos[p] == option:
                        return a.span
                    p += 1
        return st.kind_span

    # -- warnings

    def _warnings(self, model: Model, stmts: list[LayerStmt], train: TrainBlock | None) -> None:
        seen: set[tuple[str, Span]] = set()

        def r(code: str, message: str, span: Span, help: str | None = None) -> None:
            if (code, span) not in seen:  # the copies of a repeat share their statements: warn once
                seen.add((code, span))
                self.report(code, message, span, help=help)

        layers = model.layers
        for layer in layers:
            st = self._stmt_of[id(layer)]
            prev = _step_before(self._feeder, layer)
            if layer.kind == "dense" and len(layer.input_shape) >= 2:
                src = _producer(self._feeder, layer)
                if src is not None and src.kind in _SPATIAL_OUTPUT_KINDS:
                    r("dense-after-conv", f"dense is applied to the last axis of the {fmt_shape(layer.input_shape)} "
                      f"output of {src.name}, giving {fmt_shape(layer.output_shape)} rather than one vector per sample",
                      st.kind_span, help=f"put a flatten (or globalavgpool) before {layer.name}")
            if prev is not None and layer_activation(prev.kind, prev.options) == "softmax" and _is_activation(layer):
                r("activation-after-softmax", f"{layer.name} applies {layer_activation(layer.kind, layer.options)} "
                  f"to the probabilities of {prev.name}", st.kind_span,
                  help="softmax should be the last activation of a classifier")
            if layer_activation(layer.kind, layer.options) == "softmax" and layer.output_shape[-1] == 1:
                r("softmax-single-unit", f"softmax over one unit always outputs 1.0 ({layer.name})", st.kind_span,
                  help="for two classes use dense 1 activation=sigmoid, or dense 2 activation=softmax")
        last = last_layer(model.body)
        if last is not None and last.kind in DROPOUT_KINDS:
            r("dropout-last", f"{last.kind} is the last layer: it only adds noise to the outputs in training",
              self._stmt_of[id(last)].kind_span, help=f"put {last.kind} before a dense layer, not after the last one")
        cfg = model.train
        if cfg is None or train is None or not layers:
            return
        loss_item = next((it for it in train.items if it.key == "loss"), None)
        span = loss_item.span if loss_item else train.span
        last_act = final_activation(model.body)
        if cfg.loss in PROBABILITY_LOSSES and last_act not in ("softmax", "sigmoid"):
            r("loss-without-probabilities", f"{cfg.loss} expects probabilities, but the model ends in "
              f"{last_act if last_act != 'linear' else _ending(model.body)} ({model.body[-1].name})", span,
              help="end the model with activation=softmax (classes) or activation=sigmoid (binary)")
        units = model.output_shape[-1]
        if cfg.loss == "binary_crossentropy" and last_act == "softmax":
            r("loss-output-mismatch", "binary_crossentropy on a softmax output; use sigmoid for binary labels", span)
        if cfg.loss in ("sparse_categorical_crossentropy", "categorical_crossentropy") and units == 1:
            r("loss-output-mismatch", f"{cfg.loss} needs one output per class, but the model has 1 output", span,
              help="for two classes use binary_crossentropy with dense 1 activation=sigmoid")
        elif cfg.loss in ("sparse_categorical_crossentropy", "categorical_crossentropy") and last_act == "sigmoid":
            r("loss-output-mismatch", f"{cfg.loss} on a sigmoid output: its {units} outputs are separate yes/no "
              "probabilities, not one distribution over the classes (they need not sum to 1)", span,
              help="for one class out of several end with activation=softmax; for several yes/no labels use "
              "binary_crossentropy")

    # -- expect

    def _expect(self, e: ExpectStmt, model: Model) -> None:
        r = self.report
        if e.what in ("params", "trainable_params", "non_trainable_params"):
            if e.value.kind != "int":
                r("bad-expect", f"expect {e.what} takes an integer, received {e.value.text}", e.value.span)
                return
            # params is Keras's total (trainable and not); trainable_params leaves out batchnorm's moving statistics
            actual = {"params": model.total_params, "trainable_params": model.trainable_params,
                      "non_trainable_params": model.non_trainable_params}[e.what]
            want = e.value.value
            holds = {"==": actual == want, "!=": actual != want, "<=": actual <= want, ">=": actual >= want,
                     "<": actual < want, ">": actual > want}[e.op]
            if not holds:
                what = e.what.replace("_", " ").replace("non trainable", "non-trainable")
                r("expect-failed", f"expected {what} {e.op} {want:,}, but the model has {actual:,}", e.span,
                  help=_largest(model))
        elif e.what == "output":
            if e.value.kind not in ("list", "tuple", "int", "size") or e.op not in ("==", "!="):
                r("bad-expect", "expect output takes == and a shape like [10]", e.value.span)
                return
            want = tuple(e.value.value) if e.value.kind != "int" else (e.value.value,)
            actual = model.output_shape
            if (actual == want) != (e.op == "=="):
                r("expect-failed", f"expected output {e.op} [{', '.join(map(str, want))}], but the model outputs "
                  f"[{', '.join(map(str, actual))}]", e.span)
        else:
            guess = did_you_mean(e.what, ("params", "trainable_params", "non_trainable_params", "output"))
            r("bad-expect", f"unknown expectation '{e.what}'" + (f"; did you mean '{guess}'?" if guess else ""),
              e.what_span, help="expect params == N, expect trainable_params == N, expect non_trainable_params == N, "
              "expect params <= N, "
              "expect output == [D, ...]")

    # -- train

    def _train(self, block: TrainBlock) -> TrainConfig | None:
        r = self.report
        cfg: dict[str, Any] = {}
        seen: dict[str, Span] = {}
        ok = True
        for item in block.items:
            key = item.key
            if key not in TRAIN_KEYS:
                guess = did_you_mean(key, TRAIN_KEYS)
                r("bad-train", f"unknown train key '{key}'" + (f"; did you mean '{guess}'?" if guess else ""),
                  item.key_span, help=f"train keys: {', '.join(TRAIN_KEYS)}")
                ok = False
                continue
            if key in seen:
                r("bad-train", f"train key '{key}' is given twice", item.key_span,
                  help=f"first given at line {seen[key].line}")
                ok = False
                continue
            seen[key] = item.span
            if key == "loss":
                ok = self._loss(item, cfg) and ok
            elif key == "optimizer":
                opt = self._optimizer(item)
                ok = ok and opt is not None
                if opt:
                    cfg["optimizer"] = opt
            elif key == "metrics":
                ok = self._metrics(item, cfg) and ok
            elif key == "class_weight":
                ok = self._class_weight(item, cfg) and ok
            elif key == "lr_schedule":
                sched = self._lr_schedule(item)
                ok = ok and sched is not None
                if sched:
                    cfg["lr_schedule"] = sched
            elif key == "early_stopping":
                vals, good = bind(item.args, (), EARLY_STOPPING, "early_stopping", item.key_span, r)
                ok = ok and good
                if good:
                    cfg["early_stopping"] = EarlyStopping(**vals)
            else:
                vals, good = bind(item.args, (key,), (TRAIN_SCALARS[key],), key, item.key_span, r)
                ok = ok and good
                if good:
                    cfg[key] = vals[key]
        if not self._train_lr(block, cfg, "lr_schedule" in seen and "lr_schedule" not in cfg):
            ok = False
        es = cfg.get("early_stopping")
        if ok and es is not None and es.monitor.removeprefix("val_") not in ("loss",) + cfg.get("metrics", ()):
            span = next((a.value.span for it in block.items if it.key == "early_stopping"
                         for a in it.args if isinstance(a, Option) and a.key == "monitor"), seen["early_stopping"])
            r("bad-train", f"early stopping monitors {es.monitor}, but {es.monitor.removeprefix('val_')} is not "
              "among the metrics", span, help=f"add it to metrics, or monitor {'val_' if es.monitor.startswith('val_') else ''}loss")
            ok = False
        if not ok:
            return None
        return TrainConfig(**cfg)

    def _train_fit(self, model: Model, block: TrainBlock) -> None:
        """What the train block asks of the model: metrics that suit the loss and the output,
        top_k_accuracy's k within the classes, class_weight's classes those of the output."""
        r, cfg = self.report, model.train
        if not model.layers:
            return
        items = {it.key: it for it in block.items}
        out, act = model.output_shape, final_activation(model.body)
        if "metrics" in items:
            for a in items["metrics"].args:
                name = METRIC_ALIASES.get(a.value, a.value) if isinstance(a, Value) and a.kind == "word" else None
                bad = _metrics.misfit(name, cfg.loss, out, act, cfg.top_k) if name in _metrics.METRICS else None
                if bad:
                    k = next((o for o in items["metrics"].args if isinstance(o, Option) and o.key == "k"), None)
                    span = k.value.span if k is not None and bad[0].startswith("top_k_accuracy k=") else a.span
                    r("bad-train", bad[0], span, help=bad[1])
        if "class_weight" in items and cfg.class_weight:
            item = items["class_weight"]
            bad = _metrics.class_weight_misfit(cfg.loss, out, len(cfg.class_weight))
            if bad:
                values = [a for a in item.args if isinstance(a, Value)]
                r("bad-train", bad[0], values[bad[2]].span if bad[2] >= 0 else item.key_span, help=bad[1])

    def _loss(self, item, cfg: dict[str, Any]) -> bool:
        """`loss NAME [delta=...] [label_smoothing=...]`: the loss and its options into cfg."""
        r = self.report
        loss_opt = Opt("loss", "choice", choices=LOSSES + tuple(LOSS_ALIASES))
        vals, good = bind(item.args, ("loss",), (loss_opt,) + LOSS_OPTIONS, "loss", item.key_span, r)
        if not good:
            return False
        loss = LOSS_ALIASES.get(vals["loss"], vals["loss"])
        for a in item.args:
            if not isinstance(a, Option) or a.key not in LOSSES_TAKING:
                continue
            value = vals[a.key]
            if loss not in LOSSES_TAKING[a.key]:
                if a.key == "label_smoothing" and loss == "sparse_categorical_crossentropy":
                    r("bad-train", "sparse_categorical_crossentropy takes no label_smoothing (Keras's has none)",
                      a.key_span, help="use loss categorical_crossentropy label_smoothing=... with one-hot targets "
                      "(nnc one-hot encodes integer labels for it)")
                else:
                    r("unknown-option", f"{a.key} is an option of {' and '.join(LOSSES_TAKING[a.key])}, not of {loss}",
                      a.key_span)
                good = False
            elif a.key == "delta" and not value > 0:
                r("bad-value", f"huber's delta must be positive, received {a.value.text}", a.value.span)
                good = False
            elif a.key == "label_smoothing" and not 0 <= value <= 1:
                r("bad-value", f"label_smoothing must be in [0, 1], received {a.value.text}", a.value.span)
                good = False
        if good:
            cfg["loss"] = loss
            cfg["huber_delta"] = float(vals["delta"])
            cfg["label_smoothing"] = float(vals["label_smoothing"])
        return good

    def _metrics(self, item, cfg: dict[str, Any]) -> bool:
        """`metrics NAME ... [k=N]`: k belongs to top_k_accuracy."""
        r = self.report
        metrics: list[str] = []
        good = True
        seen: dict[str, Span] = {}
        options = [a for a in item.args if isinstance(a, Option)]
        for a in item.args:
            if isinstance(a, Option):
                continue
            name = a.value if a.kind == "word" else None
            name = METRIC_ALIASES.get(name, name)
            if name not in METRICS:
                guess = did_you_mean(str(a.text), METRICS)
                r("bad-train", f"unknown metric '{a.text}'" + (f"; did you mean '{guess}'?" if guess else ""),
                  a.span, help=f"metrics: {', '.join(_metrics.METRICS)}")
                good = False
            elif name in seen:
                r("bad-train", f"metric '{name}' is given twice", a.span,
                  help=f"first given at line {seen[name].line}, column {seen[name].col}")
                good = False
            else:
                seen[name] = a.span
                if name != "loss":
                    metrics.append(name)
        known = [o for o in options if o.key == "k"]
        for o in options:
            if o.key != "k":
                guess = did_you_mean(o.key, ("k",))
                r("unknown-option", f"metrics have no option '{o.key}'" + (f"; did you mean '{guess}'?" if guess else ""),
                  o.key_span, help="top_k_accuracy takes k= (for example: metrics accuracy top_k_accuracy k=3)")
                good = False
        if known and "top_k_accuracy" not in metrics:
            r("unknown-option", "k= is top_k_accuracy's option, and top_k_accuracy is not among the metrics",
              known[0].key_span, help="for example: metrics accuracy top_k_accuracy k=3")
            good = False
        elif known:
            vals, ok = bind(known, (), (Opt("k", "int", 5, minimum=1),), "top_k_accuracy", item.key_span, r)
            if ok:
                cfg["top_k"] = vals["k"]
            good = good and ok
        cfg["metrics"] = tuple(metrics)
        return good

    def _class_weight(self, item, cfg: dict[str, Any]) -> bool:
        """`class_weight W0 W1 ...`: one weight per class id, in order (Keras's class_weight dict)."""
        r = self.report
        weights: list[float] = []
        good = True
        for a in item.args:
            if isinstance(a, Option):
                r("bad-train", f"class_weight takes one weight per class id, in order, not {a.key}=",
                  a.span, help="for example, for classes 0 and 1: class_weight 1.0 5.0")
                good = False
            elif a.kind not in ("int", "float"):
                r("bad-value", f"class_weight takes numbers, received '{a.text}'", a.span,
                  help="for example, for classes 0 and 1: class_weight 1.0 5.0")
                good = False
            elif a.value < 0:
                r("bad-value", f"a class weight must be 0 or more, received {a.text}", a.span)
                good = False
            else:
                weights.append(float(a.value))
        if good and not weights:
            r("bad-train", "class_weight needs one weight per class id", item.key_span,
              help="for example, for classes 0 and 1: class_weight 1.0 5.0")
            good = False
        if good:
            cfg["class_weight"] = tuple(weights)
        return good

    def _optimizer(self, item) -> OptimizerConfig | None:
        r = self.report
        args = list(item.args)
        names = ", ".join(OPTIMIZERS)
        if not args or not isinstance(args[0], Value) or args[0].kind != "word":
            r("bad-train", f"optimizer needs a name: {names}", args[0].span if args else item.key_span)
            return None
        name = args[0].value
        if name not in OPTIMIZERS and name.lower() in OPTIMIZERS:  # Keras's class names: Adam, AdamW
            r("bad-train", f"unknown optimizer '{name}'; did you mean '{name.lower()}'?", args[0].span,
              help=f"nnc's optimizers are written in lower case: {names}")
            return None
        if name not in OPTIMIZERS and name.lower() in _kn().KERAS_OPTIMIZERS_NOT_IN_NNC:
            advice = _kn().KERAS_OPTIMIZERS_NOT_IN_NNC[name.lower()]
            r("keras-only", f"Keras's optimizer '{name}' is not in nnc", args[0].span,
              help=(f"{advice}; " if advice else "") + f"nnc's optimizers: {names}")
            return None
        if name not in OPTIMIZERS:
            guess = did_you_mean(name, OPTIMIZERS)
            r("bad-train", f"unknown optimizer '{name}'" + (f"; did you mean '{guess}'?" if guess else ""),
              args[0].span, help=f"optimizers: {names}")
            return None
        vals, good = bind(args[1:], (), OPTIMIZERS[name], name, args[0].span, r)
        clips = [a for a in args[1:] if isinstance(a, Option) and a.key in CLIP_OPTIONS]
        for a in clips:
            if vals.get(a.key) == 0:
                r("bad-value", f"{name}: {a.key} must be positive, received: {a.key}={a.value.text}", a.value.span,
                  help=f"leave {a.key} out to clip nothing")
                good = False
        if len({a.key for a in clips}) > 1:
            r("bad-train", f"{name}: {clips[0].key} and {clips[1].key} are both given; Keras takes at most one of "
              "clipnorm, clipvalue and global_clipnorm", clips[1].key_span)
            good = False
        if not good:
            return None
        return OptimizerConfig(name=name, **vals)

    def _lr_schedule(self, item) -> LRSchedule | None:
        """`lr_schedule KIND key=value ...` (LR_SCHEDULES), with the checks Keras makes when it
        builds the schedule and those it leaves to a surprise at run time."""
        r = self.report
        args = list(item.args)
        kinds = ", ".join(LR_SCHEDULES)
        if not args or not isinstance(args[0], Value) or args[0].kind != "word":
            r("bad-train", f"lr_schedule needs a kind: {kinds}", args[0].span if args else item.key_span,
              help="for example: lr_schedule cosine decay_steps=1000")
            return None
        kind = args[0].value
        if kind not in LR_SCHEDULES:
            keras = _KERAS_SCHEDULES.get(kind.lower().replace("_", ""))
            if keras in LR_SCHEDULES:
                r("bad-train", f"unknown lr_schedule '{kind}'; nnc writes Keras's {kind} as '{keras}'", args[0].span,
                  help=f"lr_schedule kinds: {kinds}")
            elif keras is not None:
                r("keras-only", f"Keras's schedule '{kind}' is not in nnc", args[0].span,
                  help=f"nnc's lr_schedule kinds: {kinds}")
            else:
                guess = did_you_mean(kind, LR_SCHEDULES)
                r("bad-train", f"unknown lr_schedule '{kind}'" + (f"; did you mean '{guess}'?" if guess else ""),
                  args[0].span, help=f"lr_schedule kinds: {kinds}")
            return None
        vals, good = bind(args[1:], (), LR_SCHEDULES[kind], kind, args[0].span, r)
        if not good:
            return None
        span = {a.key: a.value.span for a in args[1:] if isinstance(a, Option)}
        if kind == "piecewise":
            b, v = vals["boundaries"], vals["values"]
            bad = next((i for i in range(1, len(b)) if b[i] <= b[i - 1]), None)
            if bad is not None:
                r("bad-value", f"piecewise: boundaries must increase strictly, but {b[bad]} follows {b[bad - 1]}",
                  span["boundaries"])
                good = False
            if len(v) != len(b) + 1:
                r("bad-value", f"piecewise: {len(b)} boundar{'y' if len(b) == 1 else 'ies'} need {len(b) + 1} values "
                  f"(a learning rate before, between and after them), received {len(v)}", span["values"],
                  help="values[0] until the first boundary, ..., values[-1] after the last")
                good = False
        elif kind == "cosine":
            if vals["warmup_steps"] and vals["warmup_target"] is None:
                r("bad-train", "cosine: warmup_steps needs warmup_target= (the learning rate the warmup reaches); "
                  "Keras ignores warmup_steps without it", span["warmup_steps"],
                  help="lr_schedule cosine decay_steps=N warmup_target=0.001 warmup_steps=M (from the optimizer's lr)")
                good = False
            elif vals["warmup_target"] is not None and not vals["warmup_steps"]:
                r("bad-train", "cosine: warmup_target needs warmup_steps= (the steps the warmup takes)",
                  span["warmup_target"])
                good = False
        elif kind == "exponential" and vals["decay_rate"] == 0:
            r("bad-value", "exponential: decay_rate must be positive, received: decay_rate=0", span["decay_rate"])
            good = False
        if not good:
            return None
        return LRSchedule(kind=kind, **vals)

    def _train_lr(self, block: TrainBlock, cfg: dict[str, Any], bad_schedule: bool) -> bool:
        """The optimizer's lr against the schedule: piecewise's values are the learning rates (an
        lr= given must be values[0]); lr=0 is a start only for a cosine warmup; reduce_on_plateau's
        monitor must be measured. bad_schedule: the lr_schedule line had errors (reported)."""
        r = self.report
        if bad_schedule or ("optimizer" not in cfg and "lr_schedule" not in cfg):
            return True
        sched: LRSchedule | None = cfg.get("lr_schedule")
        opt: OptimizerConfig = cfg.get("optimizer", TrainConfig().optimizer)
        lr_opt = next((a for it in block.items if it.key == "optimizer" for a in it.args
                       if isinstance(a, Option) and a.key in ("lr", "learning_rate")), None)
        good = True
        if sched is not None and sched.kind == "piecewise":
            if lr_opt is not None and opt.lr != sched.values[0]:
                r("bad-train", f"the optimizer's lr={lr_opt.value.text} is not the piecewise schedule's first value "
                  f"{sched.values[0]:g}: the schedule's values are the learning rates", lr_opt.value.span,
                  help="leave lr= out of the optimizer (it is values[0])")
                return False
            cfg["optimizer"] = dataclasses.replace(opt, lr=sched.values[0])
        elif lr_opt is not None and "optimizer" in cfg and opt.lr == 0 and not (sched and sched.kind == "cosine" and sched.warmup_target is not None):
            r("bad-value", f"{opt.name}: the learning rate must be positive, received: {lr_opt.key}={lr_opt.value.text}",
              lr_opt.value.span, help="lr=0 is a start only for a warmup: lr_schedule cosine ... warmup_target=")
            good = False
        if sched is not None and sched.kind == "reduce_on_plateau":
            name = sched.monitor.removeprefix("val_")
            if name not in ("loss",) + cfg.get("metrics", ()):
                it = next(it for it in block.items if it.key == "lr_schedule")
                span = next((a.value.span for a in it.args if isinstance(a, Option) and a.key == "monitor"), it.key_span)
                r("bad-train", f"reduce_on_plateau monitors {sched.monitor}, but {name} is not among the metrics", span,
                  help=f"add it to metrics, or monitor {'val_' if sched.monitor.startswith('val_') else ''}loss")
                good = False
        return good


def _is_activation(layer: Layer) -> bool:
    """Whether the layer ends in an activation other than linear: an activation kind (relu,
    leaky_relu, prelu, ...) or a layer's activation= option (a recurrent layer's is inside it)."""
    return layer_activation(layer.kind, layer.options) != "linear"


# kinds whose output keeps spatial axes ([steps, channels] or [height, width, channels]): a dense
# right after one is applied to the last axis only (convolutions of every sort, pools, resizing)
_SPATIAL_OUTPUT_KINDS = frozenset(
    k for k in KINDS if k.startswith(("conv", "separable_conv", "depthwise_conv", "maxpool", "avgpool", "upsampling",
                                      "zeropad", "cropping")))
# kinds that keep the shape they read: skipped when looking for the layer that made a shape
_SHAPE_KEEPING = frozenset(DROPOUT_KINDS) | {"batchnorm", "layernorm"}


def last_layer(nodes: list[Node]) -> Layer | None:
    """The layer whose output a stack's output is: through repeats; None for a merge (or nothing)."""
    while nodes:
        node = nodes[-1]
        if isinstance(node, Layer):
            return node
        if node.kind != "repeat":
            return None
        nodes = node.branches[0]
    return None


def _step_before(feeder: dict[int, Node | None], layer: Layer) -> Layer | None:
    """The layer whose output `layer` reads (None: the input, or a merge's output)."""
    node = feeder.get(id(layer))
    return last_layer([node]) if node is not None else None


def _producer(feeder: dict[int, Node | None], layer: Layer) -> Layer | None:
    """The layer that last changed the shape before `layer` (skipping dropout, normalization and
    activation layers of every kind), along the stack it reads: into a repeat, never across a
    merge (a merge's output is made by no layer)."""
    src = _step_before(feeder, layer)
    while src is not None and (src.kind in _SHAPE_KEEPING or is_activation_kind(src.kind)):
        src = _step_before(feeder, src)
    return src


def final_activation(nodes: list[Node]) -> str:
    """The activation of a stack's output: its last layer's, dropout skipped; a merge gives linear
    values, except where the merge of probabilities is one (average of softmaxes, concat of
    sigmoids...)."""
    for node in reversed(nodes):
        if isinstance(node, Layer):
            if node.kind in DROPOUT_KINDS:
                continue
            return layer_activation(node.kind, node.options)
        if node.kind == "repeat":
            return final_activation(node.branches[0])
        acts = {final_activation(b) if b else "linear" for b in node.branches}
        act = acts.pop() if len(acts) == 1 else "linear"
        if node.merge == "average" and act in ("softmax", "sigmoid"):
            return act
        if act == "sigmoid" and node.merge in ("concat", "maximum", "minimum", "multiply"):
            return act
        return "linear"
    return "linear"


def _ending(nodes: list[Node]) -> str:
    return "a linear layer" if not nodes or isinstance(nodes[-1], Layer) or nodes[-1].kind == "repeat" else \
        f"a {nodes[-1].kind} merge"


def _largest(model: Model) -> str | None:
    if not model.layers:
        return None
    big = max(model.layers, key=lambda l: l.params)
    share = big.params / model.total_params if model.total_params else 0
    return f"the largest layer is {big.name} ({big.kind}) with {big.params:,} parameters ({share:.0%})"


# --- blocks ----------------------------------------------------------------------------------

MAX_LAYERS = 100_000
"""The most layers a spec may expand to (`repeat` multiplies): a check stays well under seconds."""

_BLOCK_OPTIONS: dict[str, tuple[tuple[str, ...], tuple[Opt, ...]]] = {
    "repeat": (("count",), (Opt("count", "int", minimum=1, aliases=("times",),
                                doc="how many times the body runs, as in repeat 3 { ... }"),)),
    "concat": ((), (Opt("axis", "int", -1, doc="the joined axis, counted as Keras counts it"),)),
}


def _empty_message(kind: str, st: BlockStmt) -> str:
    if kind == "residual":
        return "residual { } is empty: its body is the stack whose output is added to its input"
    if kind == "repeat":
        return "repeat { } is empty: there is nothing to repeat"
    return f"{kind} {{ }} has no branches: a merge block joins two or more branch {{ ... }}"


def _empty_help(kind: str) -> str:
    if kind == "residual":
        return "for example: residual { conv2d 64 kernel=3 padding=same }"
    if kind == "repeat":
        return "for example: repeat 3 { dense 64 activation=relu }"
    n = "two" if kind == "subtract" else "two or more"
    return f"write {n} branches: {kind} {{ branch {{ }} branch {{ conv2d 64 kernel=3 padding=same }} }}"


def _expanded(stmts: list) -> int:
    """How many layers a stack makes once every repeat is expanded."""
    n = 0
    for st in stmts:
        if isinstance(st, BlockStmt):
            inner = _expanded(st.body)
            if st.kind == "repeat" and st.args and isinstance(st.args[0], Value) and st.args[0].kind == "int":
                inner *= max(st.args[0].value, 1)
            n += inner
        else:
            n += 1
    return n


def _arg_span(st, i: int) -> Span | None:
    return st.args[i].span if len(st.args) > i else None


def _option_span_of(st, key: str) -> Span | None:
    return next((a.span for a in st.args if isinstance(a, Option) and a.key == key), None)


def _roles(st: BlockStmt, kind: str) -> list[str]:
    """What to call each input of a merge in messages."""
    if kind == "residual":
        return ["the input", "the body"]
    roles = []
    for i, sub in enumerate(b for b in st.body if isinstance(b, BlockStmt) and b.kind == "branch"):
        roles.append(f"branch {i + 1} (line {sub.span.line}" + (", empty: the block's input)" if not sub.body else ")"))
    return roles


def _dims(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _mismatch_help(kind: str, shapes: list[tuple[int, ...]], roles: list[str], axis: int | None,
                   inp: tuple[int, ...]) -> str:
    """How to make the branches agree, in nnc statements. The last axis is the channels (features),
    the others are positions: a branch that strides (its size divides the input's) sets the size,
    one that keeps the input's size gets a projection with that stride, and one that shrinks it by
    a few positions (valid padding) is told padding=same. The channels are the last working
    branch's; the others end with a 1x1 projection to them. A concat joins the channels, so they
    may differ there."""
    names = [role.split(" (")[0] for role in roles]
    rank = len(inp)
    if any(len(s) != rank for s in shapes):
        if kind == "residual":
            return f"the body must output the input's shape {_dims(inp)}"
        return "the branches output tensors of different ranks: end each with the same kind of layer"
    last = rank - 1
    if axis is not None and axis != last:
        return f"make every branch output the same size in every axis but axis {axis + 1}"
    conv = {3: "conv2d", 2: "conv1d"}.get(rank)
    sp_in = inp[:-1]

    def stride(sp) -> int | None:
        f = sp_in[0] // sp[0] if sp and sp[0] else 0
        return f if sp and f > 1 and all(d == i // f and i % f == 0 for d, i in zip(sp, sp_in)) else None

    sps = [s[:-1] for s in shapes]
    strided = [(i, stride(sp)) for i, sp in enumerate(sps) if stride(sp)]
    target_sp, f = (sps[strided[-1][0]], strided[-1][1]) if strided else (sp_in, None)
    working = [i for i, r in enumerate(roles) if not r.endswith("input)") and r != "the input"] or [len(shapes) - 1]
    channels = shapes[working[-1]][-1]
    size = lambda sp: "x".join(map(str, sp)) + (" steps" if len(sp) == 1 else "")  # noqa: E731
    tips: dict[int, str] = {}
    for i, (s, sp) in enumerate(zip(shapes, sps)):
        want_c = s[-1] if axis is not None else channels
        if rank == 1:
            if s[-1] != channels:
                tips[i] = f"end it with dense {channels}"
            continue
        if sp == target_sp:
            if s[-1] != want_c and conv:
                tips[i] = f"end it with {conv} {want_c} kernel=1 (a projection to {want_c} channels)"
            elif s[-1] != want_c:
                tips[i] = f"end it with dense {want_c}"
            continue
        if sp == sp_in and f and conv:
            tips[i] = f"a projection like {conv} {want_c} kernel=1 stride={f} ({size(sp)} to {size(target_sp)})"
        elif conv and all(a <= b for a, b in zip(sp, sp_in)):
            tips[i] = (f"it turns {size(sp_in)} into {size(sp)}: padding=same in its convolutions"
                       + (f" and stride {f}" if f and not stride(sp) else "") + f" gives {size(target_sp)}")
        else:
            tips[i] = f"make it output {_dims(target_sp + (want_c,))}"
    if kind == "residual":
        out = []
        if 0 in tips:
            proj = tips[0].split("like ", 1)[1].split(" (")[0] if "like " in tips[0] else \
                tips[0].split("with ", 1)[1].split(" (")[0] if "with " in tips[0] else None
            if proj:
                out.append(f"project the input with a shortcut branch: add {{ branch {{ {proj} }} branch {{ ...the body... }} }}")
        if 1 in tips:
            out.append("the body: " + tips[1])
        elif shapes[1][-1] != inp[-1] and shapes[1][:-1] == inp[:-1]:
            out.append(f"end the body with dense {inp[-1]}, as wide as the input" if rank == 1 else
                       f"end the body with {inp[-1]} channels, as the input has")
        return "; or ".join(out) if out else f"the body must output the input's shape {_dims(inp)}"
    return "; ".join(f"{names[i]}: {t}" for i, t in sorted(tips.items())) or f"make every branch output {_dims(shapes[-1])}"
