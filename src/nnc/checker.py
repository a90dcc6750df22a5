"""From AST to checked model: option binding, shape inference, warnings, `expect`, `train`.

Every problem becomes a Diagnostic at the exact span (the option when an option is wrong);
nothing is raised. Shape inference stops at the first layer whose shape rule fails (later
shapes would only repeat the same mistake), but option errors of later layers are still
reported, so one run shows every error a user can fix without re-running.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .diagnostics import Diagnostic, Span, did_you_mean
from .kinds import KINDS, Opt, ShapeError, fmt_shape, layer_activation
from .model import CheckResult, EarlyStopping, InputSpec, Layer, Model, OptimizerConfig, TrainConfig
from .parser import ExpectStmt, InputDecl, LayerStmt, ModelDecl, Option, SpecAST, TrainBlock, Value, parse

DTYPES = ("float32", "int64")
LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy", "mse")
LOSS_ALIASES = {"mean_squared_error": "mse"}
PROBABILITY_LOSSES = LOSSES[:3]
METRICS = ("accuracy", "loss")
METRIC_ALIASES = {"acc": "accuracy"}

_LR = Opt("lr", "float", None, aliases=("learning_rate",), minimum=0.0)
_WD = Opt("weight_decay", "float", 0.0, minimum=0.0)
_EPS = Opt("epsilon", "float", 1e-7, minimum=0.0)
OPTIMIZERS: dict[str, tuple[Opt, ...]] = {
    "sgd": (Opt("lr", "float", 0.01, aliases=("learning_rate",), minimum=0.0),
            Opt("momentum", "float", 0.0, minimum=0.0, maximum=1.0), _WD, Opt("nesterov", "bool", False)),
    "rmsprop": (Opt("lr", "float", 0.001, aliases=("learning_rate",), minimum=0.0),
                Opt("rho", "float", 0.9, minimum=0.0, maximum=1.0),
                Opt("momentum", "float", 0.0, minimum=0.0, maximum=1.0), _EPS, _WD),
    "adam": (Opt("lr", "float", 0.001, aliases=("learning_rate",), minimum=0.0),
             Opt("beta_1", "float", 0.9, minimum=0.0, maximum=1.0),
             Opt("beta_2", "float", 0.999, minimum=0.0, maximum=1.0), _EPS, _WD),
}
TRAIN_SCALARS: dict[str, Opt] = {
    "epochs": Opt("epochs", "int", 1, minimum=1),
    "batch_size": Opt("batch_size", "int", 32, minimum=1),
    "validation_split": Opt("validation_split", "float", 0.0, minimum=0.0, maximum=1.0),
    "seed": Opt("seed", "int", 0, minimum=0),
    "shuffle": Opt("shuffle", "bool", True),
}
EARLY_STOPPING = (
    Opt("monitor", "choice", "val_loss", choices=("val_loss", "val_accuracy", "loss", "accuracy")),
    Opt("patience", "int", 0, minimum=0),
    Opt("min_delta", "float", 0.0, minimum=0.0),
    Opt("restore_best_weights", "bool", False),
)
TRAIN_KEYS = ("loss", "optimizer", "metrics", "early_stopping") + tuple(TRAIN_SCALARS)


# Keras class names (in any case) and common words to nnc kinds, so that `Conv2D`,
# `SimpleRNN` or `convolution` get a suggestion where spelling distance finds none.
_KERAS_NAMES = {spec.keras.lower(): kind for kind, spec in KINDS.items()
                if "/" not in spec.keras and spec.keras != "Activation"}
_KERAS_NAMES.update({
    "globalmaxpooling1d": "globalmaxpool", "globalmaxpooling2d": "globalmaxpool",
    "globalaveragepooling1d": "globalavgpool", "globalaveragepooling2d": "globalavgpool",
    "convolution": "conv2d", "conv": "conv2d", "linear": "dense", "fc": "dense", "maxpool": "maxpool2d",
})


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
                guess = did_you_mean(arg.key, list(by_name) + list(alias))
                if guess:
                    guessed.add(alias.get(guess, guess))
                names = ", ".join(by_name) if by_name else "no options"
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
            report("duplicate-option", f"{owner} option '{key}' is given twice", span,
                   help=f"first given at line {given[key].line}, column {given[key].col}")
            continue
        given[key] = span
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


def _example(owner: str, o: Opt) -> str:
    examples = {"filters": "conv2d 32 kernel=3", "kernel": f"{owner} ... kernel=3", "pool": f"{owner} 2",
                "units": f"{owner} 64", "rate": "dropout 0.5", "dim": "embedding 32"}
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


def check_file(path: str) -> CheckResult:
    """Read and check a spec file; an unreadable file is an `io` diagnostic, not an exception."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # a BOM (Windows editors) is not part of the spec
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
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
        layers: list[LayerStmt] = []
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
            elif isinstance(st, LayerStmt):
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
        model = Model(model_decl.name if model_decl else "model", inp, built, train_cfg,
                      hashlib.sha256(self.text.encode("utf-8")).hexdigest())
        if had_syntax:
            # A dropped line may have held a layer or the loss: no warnings, and an expect only
            # where every dropped line comes after it and after the last layer (a broken train block).
            first = min(syntax_lines)
            last_layer = layers[-1].span.line if layers else 0
            for e in expects:
                if first > max(e.span.line, last_layer):
                    self._expect(e, model)
            return model
        if not layers and input_decl is not None:
            r("no-layers", "the model has no layers", input_decl.span)
        self._warnings(model, layers, train)
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

    def _layers(self, stmts: list[LayerStmt], inp: InputSpec | None, syntax_lines: list[int] = (),
                after_line: int = 0) -> list[Layer] | None:
        """Bind every layer's options and infer shapes. A line the parser dropped for a syntax
        error after the input may have been a layer, so shapes past it are unknown: options are
        still checked there, shapes are not (they would report mistakes the user did not make)."""
        r = self.report
        broken = min((l for l in syntax_lines if l > after_line), default=None)
        shape = inp.shape if inp else None
        dtype = inp.dtype if inp else None
        counts: dict[str, int] = {}
        names: dict[str, Span] = {}
        out: list[Layer] = []
        ok = inp is not None
        for idx, st in enumerate(stmts):
            spec = KINDS.get(st.kind)
            if spec is None:
                guess = did_you_mean(st.kind, KINDS) or _KERAS_NAMES.get(st.kind.lower())
                help = None
                if st.kind in TRAIN_KEYS:
                    help = f"'{st.kind}' belongs inside a train {{ ... }} block"
                elif st.kind in ("model", "input", "expect", "train"):
                    help = f"'{st.kind}' is a statement keyword; check the rest of the line"
                r("unknown-layer", f"unknown layer '{st.kind}'" + (f"; did you mean '{guess}'?" if guess else ""),
                  st.kind_span, help=help or f"layer kinds: {', '.join(KINDS)}")
                ok = False
                shape = None
                continue
            counts[st.kind] = counts.get(st.kind, 0) + 1
            name = st.name or f"{st.kind}_{counts[st.kind]}"
            name_span = st.name_span or st.kind_span
            if name in names:
                r("duplicate-name", f"layer name '{name}' is already used at line {names[name].line}", name_span,
                  help="give this layer another name (NAME: kind ...)")
                ok = False
            names.setdefault(name, name_span)
            opts, bound = bind(st.args, spec.positional, spec.options, st.kind, st.kind_span, r)
            if not bound:
                ok = False
                shape = None
                continue
            if broken is not None and st.span.line > broken:
                ok = False
                shape = None
            if shape is None:
                continue  # an earlier layer failed: its output shape is unknown
            if spec.accepts_dtype != dtype:
                if dtype == "int64":
                    r("bad-dtype", f"{st.kind} received the int64 token ids of input '{inp.name}' "
                      f"[{', '.join(map(str, shape))}]; only an embedding reads token ids", st.kind_span,
                      help="token ids go through an embedding first: embedding 32")
                else:
                    r("bad-dtype", f"{st.kind} expects int64 token ids, but {dtype} values flow in", st.kind_span,
                      help="an embedding must come first, right after an int64 input" if idx else
                      "declare the input as int64[...] vocab=N")
                ok = False
                shape = None
                continue
            if st.kind == "embedding" and opts["vocab"] is None:
                if inp.vocab is None:
                    r("missing-vocab", f"embedding needs the vocabulary size, but input '{inp.name}' declares no vocab "
                      "and the embedding has no vocab= option", st.kind_span,
                      help=f"add vocab=N to the input (input {inp.name}: int64[...] vocab=10000) or to the embedding")
                    ok = False
                    shape = None
                    continue
                opts["vocab"] = inp.vocab
            try:
                spec.check_input(opts, shape)
                new_shape = spec.output_shape(opts, shape)
                weights = spec.weight_shapes(opts, shape)
            except ShapeError as e:
                r(e.code, e.message, self._option_span(st, e.option), help=e.help)
                ok = False
                shape = None
                continue
            out.append(Layer(name, st.kind, opts, shape, new_shape, dtype, weights, st.span, idx))
            shape, dtype = new_shape, spec.output_dtype(opts, dtype)
        return out if ok else None

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
        r = self.report
        layers = model.layers
        for i, layer in enumerate(layers):
            st = stmts[i]
            prev = layers[i - 1] if i else None
            if layer.kind == "dense" and len(layer.input_shape) >= 2:
                src = _producer(layers, i)
                if src is not None and src.kind in ("conv1d", "conv2d", "maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"):
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
        if layers and layers[-1].kind == "dropout":
            r("dropout-last", "dropout is the last layer: it only adds noise to the outputs in training",
              stmts[len(layers) - 1].kind_span, help="put dropout before a dense layer, not after the last one")
        cfg = model.train
        if cfg is None or train is None or not layers:
            return
        loss_item = next((it for it in train.items if it.key == "loss"), None)
        span = loss_item.span if loss_item else train.span
        last_act = _final_activation(layers)
        if cfg.loss in PROBABILITY_LOSSES and last_act not in ("softmax", "sigmoid"):
            r("loss-without-probabilities", f"{cfg.loss} expects probabilities, but the model ends in "
              f"{last_act if last_act != 'linear' else 'a linear layer'} ({layers[-1].name})", span,
              help="end the model with activation=softmax (classes) or activation=sigmoid (binary)")
        units = model.output_shape[-1]
        if cfg.loss == "binary_crossentropy" and last_act == "softmax":
            r("loss-output-mismatch", "binary_crossentropy on a softmax output; use sigmoid for binary labels", span)
        if cfg.loss in ("sparse_categorical_crossentropy", "categorical_crossentropy") and units == 1:
            r("loss-output-mismatch", f"{cfg.loss} needs one output per class, but the model has 1 output", span,
              help="for two classes use binary_crossentropy with dense 1 activation=sigmoid")

    # -- expect

    def _expect(self, e: ExpectStmt, model: Model) -> None:
        r = self.report
        if e.what in ("params", "trainable_params"):
            if e.value.kind != "int":
                r("bad-expect", f"expect {e.what} takes an integer, received {e.value.text}", e.value.span)
                return
            # params is Keras's total (trainable and not); trainable_params leaves out batchnorm's moving statistics
            actual = model.total_params if e.what == "params" else model.trainable_params
            want = e.value.value
            holds = {"==": actual == want, "!=": actual != want, "<=": actual <= want, ">=": actual >= want,
                     "<": actual < want, ">": actual > want}[e.op]
            if not holds:
                what = "params" if e.what == "params" else "trainable params"
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
            guess = did_you_mean(e.what, ("params", "trainable_params", "output"))
            r("bad-expect", f"unknown expectation '{e.what}'" + (f"; did you mean '{guess}'?" if guess else ""),
              e.what_span, help="expect params == N, expect trainable_params == N, expect params <= N, "
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
                loss_opt = Opt("loss", "choice", choices=LOSSES + tuple(LOSS_ALIASES))
                vals, good = bind(item.args, ("loss",), (loss_opt,), "loss", item.key_span, r)
                if good:
                    cfg["loss"] = LOSS_ALIASES.get(vals["loss"], vals["loss"])
                ok = ok and good
            elif key == "optimizer":
                opt = self._optimizer(item)
                ok = ok and opt is not None
                if opt:
                    cfg["optimizer"] = opt
            elif key == "metrics":
                metrics = []
                for a in item.args:
                    name = a.value if isinstance(a, Value) and a.kind == "word" else None
                    name = METRIC_ALIASES.get(name, name)
                    if name not in METRICS:
                        text = a.text if isinstance(a, Value) else a.key
                        guess = did_you_mean(str(text), METRICS)
                        r("bad-train", f"unknown metric '{text}'" + (f"; did you mean '{guess}'?" if guess else ""),
                          a.span, help="metrics: accuracy")
                        ok = False
                    elif name != "loss":
                        metrics.append(name)
                cfg["metrics"] = tuple(metrics)
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
        if not ok:
            return None
        return TrainConfig(**cfg)

    def _optimizer(self, item) -> OptimizerConfig | None:
        r = self.report
        args = list(item.args)
        if not args or not isinstance(args[0], Value) or args[0].kind != "word":
            r("bad-train", "optimizer needs a name: sgd, rmsprop or adam", args[0].span if args else item.key_span)
            return None
        name = args[0].value
        if name not in OPTIMIZERS:
            guess = did_you_mean(name, OPTIMIZERS)
            r("bad-train", f"unknown optimizer '{name}'" + (f"; did you mean '{guess}'?" if guess else ""),
              args[0].span, help="optimizers: sgd, rmsprop, adam")
            return None
        vals, good = bind(args[1:], (), OPTIMIZERS[name], name, args[0].span, r)
        if not good:
            return None
        return OptimizerConfig(name=name, **vals)


def _is_activation(layer: Layer) -> bool:
    return layer.kind in ("relu", "sigmoid", "tanh", "softmax") or (
        layer.options.get("activation", "linear") != "linear" and layer.kind != "rnn")


def _producer(layers: list[Layer], i: int) -> Layer | None:
    """The layer that last changed the shape before layer i (skipping dropout, activations)."""
    for j in range(i - 1, -1, -1):
        if layers[j].kind not in ("dropout", "relu", "sigmoid", "tanh", "softmax"):
            return layers[j]
    return None


def _final_activation(layers: list[Layer]) -> str:
    for layer in reversed(layers):
        if layer.kind == "dropout":
            continue
        return layer_activation(layer.kind, layer.options)
    return "linear"


def _largest(model: Model) -> str | None:
    if not model.layers:
        return None
    big = max(model.layers, key=lambda l: l.params)
    share = big.params / model.total_params if model.total_params else 0
    return f"the largest layer is {big.name} ({big.kind}) with {big.params:,} parameters ({share:.0%})"

