"""What a Keras user writes, in nnc's words: the names Keras has and nnc does not, Keras's class
names of nnc's kinds, and a Keras call (`Conv2D(32, (3, 3), activation='relu')`) translated into
the nnc line to write instead.

Used by the checker (unknown kinds, options and values) and the parser (a Keras call is not an
nnc line). A name in a NOT_IN_NNC table is reported as Keras's, never as a misspelling of
something else; every name in these tables is checked against Keras itself by
tests/checker/test_checker_keras_names.py.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass

from nnc.lang.kinds import ACTIVATIONS, KINDS, Opt

# --- Keras's names of nnc's kinds -------------------------------------------------------------

KERAS_TO_KIND: dict[str, str] = {spec.keras: kind for kind, spec in KINDS.items()
                                 if "/" not in spec.keras and spec.keras != "Activation"}
"""Keras 3 class name (exact spelling) to the nnc kind that is its twin."""
KERAS_TO_KIND.update({
    "GlobalMaxPooling1D": "globalmaxpool", "GlobalMaxPooling2D": "globalmaxpool",
    "GlobalAveragePooling1D": "globalavgpool", "GlobalAveragePooling2D": "globalavgpool",
    "GlobalMaxPool1D": "globalmaxpool", "GlobalMaxPool2D": "globalmaxpool",
    "GlobalAvgPool1D": "globalavgpool", "GlobalAvgPool2D": "globalavgpool",
    "MaxPool1D": "maxpool1d", "MaxPool2D": "maxpool2d", "AvgPool1D": "avgpool1d", "AvgPool2D": "avgpool2d",
    "Convolution1D": "conv1d", "Convolution2D": "conv2d",
    "Convolution1DTranspose": "conv1d_transpose", "Convolution2DTranspose": "conv2d_transpose",
    "SeparableConvolution1D": "separable_conv1d", "SeparableConvolution2D": "separable_conv2d",
    "ReLU": "relu", "Softmax": "softmax",
})
KERAS_TO_KIND_LOWER = {k.lower(): v for k, v in KERAS_TO_KIND.items()}

# Keras's merge layers are nnc blocks (written out in messages, nnc.lang.model.BLOCKS)
_MERGE_BLOCKS = {"Add": "add", "Concatenate": "concat", "Multiply": "multiply", "Average": "average",
                 "Maximum": "maximum", "Minimum": "minimum", "Subtract": "subtract"}

_THREE_D = "nnc has 1-D and 2-D kinds only ([steps, features] and [height, width, channels])"
_AUGMENT = "augment the data before it reaches the model: nnc has no random augmentation layers"
_PREPROCESS = "prepare the data before it reaches the model: nnc's input is float32 values or int64 token ids"

KERAS_LAYERS_NOT_IN_NNC: dict[str, str | None] = {
    "TimeDistributed": "nnc's dense already applies to the last axis of any rank, as TimeDistributed(Dense(...)) does",
    "Bidirectional": "nnc spells it as an option of the recurrent layer: lstm 64 bidirectional=true "
                     "(also rnn and gru; merge=concat|sum|mul|ave)",
    "ConvLSTM1D": "nnc has no convolutional recurrent layer: convolve each frame, then reshape to [steps, features] for an lstm",
    "ConvLSTM2D": "nnc has no convolutional recurrent layer: convolve each frame, then reshape to [steps, features] for an lstm",
    "ConvLSTM3D": _THREE_D,
    "Conv3D": _THREE_D, "Convolution3D": _THREE_D, "Conv3DTranspose": _THREE_D, "Convolution3DTranspose": _THREE_D,
    "MaxPooling3D": _THREE_D, "MaxPool3D": _THREE_D, "AveragePooling3D": _THREE_D, "AvgPool3D": _THREE_D,
    "GlobalMaxPooling3D": _THREE_D, "GlobalMaxPool3D": _THREE_D, "GlobalAveragePooling3D": _THREE_D,
    "GlobalAvgPool3D": _THREE_D, "UpSampling3D": _THREE_D, "ZeroPadding3D": _THREE_D, "Cropping3D": _THREE_D,
    "SpatialDropout3D": _THREE_D, "AdaptiveAveragePooling3D": _THREE_D, "AdaptiveMaxPooling3D": _THREE_D,
    "AdaptiveAveragePooling1D": "use avgpool1d with a pool that divides the steps, or globalavgpool",
    "AdaptiveAveragePooling2D": "use avgpool2d with a pool that divides the image, or globalavgpool",
    "AdaptiveMaxPooling1D": "use maxpool1d with a pool that divides the steps, or globalmaxpool",
    "AdaptiveMaxPooling2D": "use maxpool2d with a pool that divides the image, or globalmaxpool",
    "Attention": "nnc's attention is multi-head self-attention (Keras's MultiHeadAttention): attention heads=1 key_dim=64",
    "AdditiveAttention": "nnc's attention is multi-head dot-product self-attention: attention heads=1 key_dim=64",
    "GroupQueryAttention": "nnc's attention is multi-head self-attention: attention heads=8 key_dim=64",
    "GroupNormalization": "nnc normalizes with batchnorm (per channel, over the batch) or layernorm (per sample)",
    "UnitNormalization": "nnc normalizes with layernorm (per sample, last axis) or batchnorm",
    "RMSNormalization": "nnc normalizes with layernorm (per sample, last axis) or batchnorm",
    "SpectralNormalization": None,
    "Lambda": "a spec holds only nnc's kinds: there is no custom Python code in a model",
    "Masking": "nnc has no masks: every step of a sequence counts",
    "Rescaling": "scale the data before it reaches the model (for example x / 255 for images)",
    "Resizing": "resize the data before it reaches the model; upsampling2d scales by whole factors",
    "CenterCrop": "cropping2d cuts a fixed number of rows and columns: cropping2d [top, bottom, left, right]",
    "Normalization": "normalize the data before it reaches the model, or use batchnorm as the first layer",
    "Discretization": _PREPROCESS, "CategoryEncoding": _PREPROCESS, "Hashing": _PREPROCESS,
    "HashedCrossing": _PREPROCESS, "StringLookup": _PREPROCESS, "IntegerLookup": _PREPROCESS,
    "TextVectorization": "turn text into token ids before the model: declare input tokens: int64[STEPS] vocab=N "
                         "and start with an embedding",
    "MelSpectrogram": _PREPROCESS, "STFTSpectrogram": _PREPROCESS,
    "GaussianNoise": "nnc's regularizing layers are dropout, spatial_dropout1d and spatial_dropout2d",
    "GaussianDropout": "nnc's regularizing layers are dropout, spatial_dropout1d and spatial_dropout2d",
    "AlphaDropout": "nnc's regularizing layers are dropout, spatial_dropout1d and spatial_dropout2d",
    "ActivityRegularization": "nnc penalizes weights, not activations: l1= and l2= on a weighted layer",
    "Dot": None,
    "EinsumDense": "dense applies to the last axis of any rank",
    "Identity": "leave it out; in a merge block an empty branch { } is the block's input itself",
    "SimpleRNNCell": "nnc's recurrent layers are rnn (SimpleRNN), lstm and gru",
    "LSTMCell": "nnc's recurrent layers are rnn (SimpleRNN), lstm and gru",
    "GRUCell": "nnc's recurrent layers are rnn (SimpleRNN), lstm and gru",
    "StackedRNNCells": "stack recurrent layers one a line, each but the last with return_sequences=true",
    "ReversibleEmbedding": "embedding",
    "TokenAndPositionEmbedding": "write embedding DIM then position_embedding: the token and the position vectors, added",
    "RandomFlip": _AUGMENT, "RandomRotation": _AUGMENT, "RandomZoom": _AUGMENT, "RandomCrop": _AUGMENT,
    "RandomContrast": _AUGMENT, "RandomTranslation": _AUGMENT, "RandomBrightness": _AUGMENT,
    "RandomHue": _AUGMENT, "RandomSaturation": _AUGMENT, "RandomGrayscale": _AUGMENT, "RandAugment": _AUGMENT,
    "MixUp": _AUGMENT, "CutMix": _AUGMENT, "AugMix": _AUGMENT,
    "Wrapper": None, "Layer": None, "TorchModuleWrapper": None, "JaxLayer": None, "FlaxLayer": None,
    "TFSMLayer": None,
}
KERAS_LAYERS_NOT_IN_NNC.update({
    name: f"nnc writes it as a block: {block} {{ branch {{ ... }} branch {{ ... }} }}"
    for name, block in _MERGE_BLOCKS.items()})
KERAS_LAYERS_LOWER = {k.lower(): k for k in KERAS_LAYERS_NOT_IN_NNC}

KERAS_ACTIVATIONS_NOT_IN_NNC: dict[str, str | None] = {
    "exponential": None,
    "hard_silu": "nnc has silu (its smooth form) and hard_sigmoid",
    "hard_swish": "nnc has silu (its smooth form) and hard_sigmoid",
    "hard_tanh": "nnc has tanh and relu6",
    "hard_shrink": None,
    "soft_shrink": None,
    "tanh_shrink": None,
    "sparsemax": "softmax gives every class a share; nnc has no sparse version",
    "celu": "elu is celu with alpha=1",
    "glu": None,
    "squareplus": "softplus is a smooth relu too",
    "sparse_plus": "softplus is a smooth relu too",
    "sparse_sigmoid": "nnc has sigmoid and hard_sigmoid",
    "log_sigmoid": "nnc has sigmoid and log_softmax",
    "threshold": "relu is threshold(x, 0, 0)",
}

_RECURRENT = ("rnn", "lstm", "gru")
KERAS_OPTIONS_NOT_IN_NNC: dict[str, str | None] = {
    "kernel_initializer": "nnc initializes as Keras does by default (glorot_uniform kernels, zero biases); "
                          "trained weights come with --weights",
    "bias_initializer": "nnc's biases start at zero, as Keras's default",
    "recurrent_initializer": "nnc's recurrent kernels start orthogonal, as Keras's default",
    "embeddings_initializer": "nnc initializes as Keras does by default",
    "depthwise_initializer": "nnc initializes as Keras does by default",
    "pointwise_initializer": "nnc initializes as Keras does by default",
    "gamma_initializer": "gamma starts at 1 and beta at 0, as Keras's default",
    "beta_initializer": "gamma starts at 1 and beta at 0, as Keras's default",
    "moving_mean_initializer": None, "moving_variance_initializer": None,
    "kernel_regularizer": "nnc writes it l1=... l2=... (for example l2=0.0001)",
    "depthwise_regularizer": "nnc writes kernel penalties l1=... l2=...",
    "pointwise_regularizer": "nnc writes kernel penalties l1=... l2=...",
    "embeddings_regularizer": "nnc writes it l1=... l2=...",
    "bias_regularizer": "nnc penalizes kernels only: l1= and l2=",
    "recurrent_regularizer": "nnc penalizes the input kernels only: l1= and l2=",
    "activity_regularizer": "nnc penalizes weights, not activations: l1= and l2=",
    "beta_regularizer": None, "gamma_regularizer": None,
    "kernel_constraint": None, "bias_constraint": None, "recurrent_constraint": None,
    "depthwise_constraint": None, "pointwise_constraint": None, "embeddings_constraint": None,
    "beta_constraint": None, "gamma_constraint": None,
    "data_format": "nnc is channels-last, Keras's default: leave it out",
    "input_shape": "the shape is the input statement's: input x: float32[...]",
    "batch_input_shape": "the shape is the input statement's: input x: float32[...]; the batch is implicit",
    "batch_size": "the batch size is set in train { batch_size N }",
    "input_length": "the steps are the input's: input tokens: int64[STEPS] vocab=N",
    "name": "a layer's name is written before its kind: NAME: KIND ...",
    "trainable": "nnc trains every weight (batchnorm's moving statistics aside)",
    "dtype": "the dtype is the input's: float32 values, int64 token ids",
    "unroll": None,
    "stateful": "nnc's recurrent layers start each sample from a zero state",
    "return_state": "nnc layers have one output; return_sequences=true gives every step",
    "use_cudnn": "nnc picks its own kernels; the result is the same",
    "unit_forget_bias": "nnc's LSTM forget-gate biases start at 1, as Keras's default",
    "seed": "the seed is set in train { seed N }",
    "noise_shape": "spatial_dropout1d and spatial_dropout2d drop whole channels",
    "mask_zero": "nnc has no masks: every step counts",
    "output_padding": None,
    "keepdims": "reshape after the pool gives the kept axes back: reshape [1, 1, C]",
    "max_value": "relu6 is relu with max_value=6",
    "threshold": None,
    "shared_axes": "nnc's prelu learns one slope per input element (no shared axes)",
    "axis": "nnc normalizes the last axis (channels-last)",
    "synchronized": None, "renorm": None,
    "output_shape": None, "attention_axes": None, "flash_attention": None,
    "lora_rank": None, "sparse": None,
}

KERAS_LOSSES_NOT_IN_NNC: dict[str, str | None] = {
    name: None for name in (
        "binary_focal_crossentropy", "categorical_focal_crossentropy", "categorical_generalized_cross_entropy",
        "categorical_hinge", "cosine_similarity", "ctc", "dice", "hinge",
        "log_cosh", "mean_absolute_percentage_error", "mape",
        "mean_squared_logarithmic_error", "msle", "poisson", "squared_hinge", "tversky", "circle")}
KERAS_LOSSES_NOT_IN_NNC.update({"log_cosh": "nnc's regression losses are mse, mae and huber (log_cosh's near twin)"})

KERAS_OPTIMIZERS_NOT_IN_NNC: dict[str, str | None] = {
    "adamax": None, "adadelta": None, "adafactor": None, "ftrl": None, "lamb": None, "lion": None, "muon": None,
}

def keras_layer_not_in_nnc(word: str) -> str | None:
    """Keras's spelling of `word` when it names a Keras layer class nnc does not have."""
    if word in KERAS_LAYERS_NOT_IN_NNC:
        return word
    if word[:1].isupper() or word.lower() not in KINDS:
        return KERAS_LAYERS_LOWER.get(word.lower())
    return None


# --- a Keras call, translated -------------------------------------------------------------------

# Keras's positional parameters, in its order, for the classes where they matter
_KERAS_POSITIONAL: dict[str, tuple[str, ...]] = {
    "Dense": ("units", "activation", "use_bias"),
    "Conv": ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "groups", "activation",
             "use_bias"),
    "ConvTranspose": ("filters", "kernel_size", "strides", "padding", "output_padding", "data_format", "dilation_rate",
                      "activation", "use_bias"),
    "SeparableConv": ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
                      "depth_multiplier", "activation", "use_bias"),
    "DepthwiseConv": ("kernel_size", "strides", "padding", "depth_multiplier", "data_format", "dilation_rate",
                      "activation", "use_bias"),
    "Pool": ("pool_size", "strides", "padding", "data_format"),
    "Dropout": ("rate", "noise_shape", "seed"),
    "SpatialDropout": ("rate", "seed"), "SpatialDropout2D": ("rate", "data_format", "seed"),
    "Embedding": ("input_dim", "output_dim"),
    "SimpleRNN": ("units", "activation", "use_bias"),
    "LSTM": ("units", "activation", "recurrent_activation", "use_bias"),
    "GRU": ("units", "activation", "recurrent_activation", "use_bias"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "LayerNormalization": ("axis", "epsilon", "center", "scale"),
    "Reshape": ("target_shape",), "Permute": ("dims",), "RepeatVector": ("n",),
    "UpSampling1D": ("size",), "UpSampling2D": ("size", "data_format", "interpolation"),
    "ZeroPadding": ("padding", "data_format"), "Cropping": ("cropping", "data_format"), "Cropping1D": ("cropping",),
    "MultiHeadAttention": ("num_heads", "key_dim", "value_dim", "dropout", "use_bias"),
    "LeakyReLU": ("negative_slope",), "ELU": ("alpha",), "Flatten": ("data_format",),
    "Global": ("data_format", "keepdims"),
}
_KERAS_DEFAULTS = {"pool": 2}  # Keras's defaults where nnc requires a value (MaxPooling2D() pools 2x2)


def _signature(keras_name: str) -> tuple[str, ...]:
    if keras_name in _KERAS_POSITIONAL:
        return _KERAS_POSITIONAL[keras_name]
    for prefix in ("SeparableConv", "DepthwiseConv", "Global", "ZeroPadding", "Cropping", "SpatialDropout"):
        if keras_name.startswith(prefix):
            return _KERAS_POSITIONAL[prefix]
    if "Transpose" in keras_name:
        return _KERAS_POSITIONAL["ConvTranspose"]
    if keras_name.startswith(("Conv", "Convolution")):
        return _KERAS_POSITIONAL["Conv"]
    if "Pool" in keras_name:
        return _KERAS_POSITIONAL["Pool"]
    return ()


@dataclass
class KerasCall:
    keras: str  # the Keras class called
    line: str | None  # the nnc line to write, None when nnc has no such layer
    notes: list[str]
    not_in_nnc: bool = False  # a Keras layer nnc does not have

    def message(self) -> str:
        if self.not_in_nnc:
            return f"Keras's {self.keras} is not in nnc (and an nnc layer is not a Python call)"
        return f"this is a Keras call; in nnc write: {self.line}"

    def help(self) -> str:
        if self.not_in_nnc:
            return "; ".join(self.notes) or KERAS_LAYERS_NOT_IN_NNC.get(self.keras) or \
                "nnc's layer kinds: " + ", ".join(KINDS)
        base = "an nnc layer is a line: [NAME:] KIND VALUE key=value ... (no parentheses, commas or quotes)"
        return "; ".join(self.notes) if self.notes else base


_CALL_HINT = re.compile(r"[A-Za-z_][\w.]*\s*\(")
MAX_CALL_TEXT = 1000


def _callee(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _parse_call(code: str) -> ast.Call | None:
    code = code.strip().rstrip(",").strip()
    if not code or len(code) > MAX_CALL_TEXT or not _CALL_HINT.search(code):
        return None
    # a call cut at the end of its line (its arguments go on): close what is open
    closing = {"(": ")", "[": "]", "{": "}"}
    stack = []
    for ch in code:
        if ch in closing:
            stack.append(closing[ch])
        elif ch in ")]}" and stack and stack[-1] == ch:
            stack.pop()
    for text in (code, code.rstrip(",") + "".join(reversed(stack))):
        try:
            with warnings.catch_warnings():  # Python's SyntaxWarnings (1x, "\d") must not reach the user
                warnings.simplefilter("ignore")
                tree = ast.parse(text, mode="exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
            continue
        if len(tree.body) != 1:
            return None
        st = tree.body[0]
        node = st.value if isinstance(st, (ast.Expr, ast.Assign)) else None
        if isinstance(node, ast.Tuple) and len(node.elts) == 1:  # a line of a list: Dense(10),
            node = node.elts[0]
        while isinstance(node, ast.Call):
            name = _callee(node.func)
            if isinstance(node.func, ast.Call):  # the functional API: Dense(64)(x)
                node = node.func
            elif name == "add" and isinstance(node.func, ast.Attribute) and len(node.args) == 1:  # model.add(...)
                node = node.args[0]
            else:
                return node if name else None
        return None
    return None


def _const(node: ast.AST):
    """A Python literal (numbers, strings, bools, None, tuples and lists of them), or raise."""
    return ast.literal_eval(node)


def _size_text(v, n: int) -> str | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (tuple, list)) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        if n == 1 and len(v) == 1:
            return str(v[0])
        if len(v) == n:
            return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))
    return None


def _value_text(opt: Opt, v, source: str) -> str | None:
    """The nnc spelling of a Python value for `opt`, or None when it cannot be written."""
    t = opt.type
    if t == "bool":
        return ("true" if v else "false") if isinstance(v, bool) else None
    if t == "int":
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else None
    if t == "float":
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return source if re.fullmatch(r"[0-9][0-9_.eE+-]*", source) else repr(v)
        return None
    if t == "choice":
        return v if isinstance(v, str) and re.fullmatch(r"[A-Za-z_]\w*", v) else None
    if t in ("size1", "size2"):
        return _size_text(v, int(t[-1]))
    if t in ("shape", "axes"):
        if isinstance(v, (tuple, list)) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return "[" + ", ".join(map(str, v)) + "]"
        return None
    if t in ("pad1", "pad2"):
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        flat = []
        for x in (v if isinstance(v, (tuple, list)) else ()):
            flat += list(x) if isinstance(x, (tuple, list)) else [x]
        if not flat or not all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
            return None
        if t == "pad2" and len(flat) == 2 and not any(isinstance(x, (tuple, list)) for x in v):
            return "x".join(map(str, flat))  # (rows, columns), each at both ends
        return "[" + ", ".join(map(str, flat)) + "]"
    return None


def _regularizer(node: ast.AST) -> dict[str, str] | None:
    """l1=/l2= from Keras's kernel_regularizer value: l2(0.01), regularizers.L1L2(l1=..., l2=...), 'l2'."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in ("l1", "l2", "l1_l2"):
        return {k: "0.01" for k in ("l1", "l2") if k in node.value.lower()}
    if isinstance(node, ast.Call) and (_callee(node.func) or "").lower() in ("l1", "l2", "l1l2", "l1_l2"):
        name = _callee(node.func).lower()
        out = {}
        keys = ("l1", "l2") if name in ("l1l2", "l1_l2") else (name,)
        for key, arg in zip(keys, node.args):
            out[key] = ast.unparse(arg)
        for kw in node.keywords:
            if kw.arg in ("l1", "l2"):
                out[kw.arg] = ast.unparse(kw.value)
        if not node.args and not node.keywords and name in ("l1", "l2"):
            out[name] = "0.01"  # Keras's default factor
        return out if all(re.fullmatch(r"[0-9][0-9_.eE+-]*", v) for v in out.values()) else None
    return None


def translate(code: str) -> KerasCall | None:
    """The nnc line for a Keras call written as Python (`Conv2D(32, (3, 3), activation='relu')`,
    `layers.Dense(64)`, `model.add(Flatten())`, `x = LSTM(32)(x)`), or None when `code` is not a
    call of a Keras layer class."""
    named = re.match(r"\s*([A-Za-z_]\w*)\s*:(?!=)\s*(.*)", code)  # nnc's `name: Dense(10)`
    call = _parse_call(named.group(2) if named else code)
    if call is None:
        return None
    out = _translate_call(call, 0)
    if out is not None and named and out.line is not None and not out.line.startswith("input "):
        out.line = f"{named.group(1)}: {out.line.split(': ', 1)[-1]}"
    return out


def _translate_call(call: ast.Call, depth: int) -> KerasCall | None:
    keras = _callee(call.func)
    if keras is None or depth > 2:
        return None
    notes: list[str] = []
    if keras in ("Bidirectional", "TimeDistributed") and call.args and isinstance(call.args[0], ast.Call):
        inner = _translate_call(call.args[0], depth + 1)
        if inner is None or inner.line is None:
            return inner
        kind = inner.line.split(":")[-1].split()[0]
        if keras == "Bidirectional" and kind in _RECURRENT:
            extra = " bidirectional=true"
            for kw in call.keywords:
                if kw.arg == "merge_mode":
                    try:
                        mode = _const(kw.value)
                    except (ValueError, SyntaxError, TypeError):
                        mode = Ellipsis
                    if mode in ("concat", "sum", "mul", "ave"):
                        extra += f" merge={mode}"
                    else:  # merge_mode=None (a list of both directions) has no nnc spelling
                        notes.append(f"left out merge_mode={ast.unparse(kw.value)}: nnc's merge is concat, sum, "
                                     "mul or ave (an nnc layer has one output)")
            return KerasCall(keras, inner.line + extra, inner.notes + notes + [
                "nnc writes Keras's Bidirectional as the option bidirectional=true of rnn, lstm and gru"])
        if keras == "TimeDistributed" and kind == "dense":
            return KerasCall(keras, inner.line, inner.notes + [
                "nnc's dense applies to the last axis of any rank, as TimeDistributed(Dense(...)) does"])
        return KerasCall(keras, None, [], not_in_nnc=True)
    if keras in ("Input", "InputLayer"):
        shape = next((a for a in call.args[:1]), None)
        dtype = "float32"
        for kw in call.keywords:
            if kw.arg in ("shape", "input_shape"):
                shape = kw.value
            elif kw.arg == "dtype":
                try:
                    dtype = "int64" if "int" in str(_const(kw.value)) else "float32"
                except (ValueError, SyntaxError, TypeError):
                    pass
        try:
            dims = _const(shape) if shape is not None else None
        except (ValueError, SyntaxError, TypeError):
            dims = None
        if isinstance(dims, int) and not isinstance(dims, bool):
            dims = (dims,)
        if not (isinstance(dims, (tuple, list)) and dims and all(isinstance(d, int) for d in dims)):
            return KerasCall(keras, "input x: float32[D1, D2, ...]", ["the batch is implicit, as in Keras"])
        vocab = " vocab=N" if dtype == "int64" else ""
        return KerasCall(keras, f"input x: {dtype}[{', '.join(map(str, dims))}]{vocab}",
                         ["the batch is implicit, as in Keras"])
    if keras == "Activation":
        try:
            act = _const(call.args[0]) if call.args else None
        except (ValueError, SyntaxError, TypeError):
            act = _callee(call.args[0])
        if isinstance(act, str) and act in KINDS:
            return KerasCall(keras, act, ["an activation is a layer of its own (relu), or the option activation=relu"])
        if isinstance(act, str) and act.lower() in KERAS_ACTIVATIONS_NOT_IN_NNC:
            advice = KERAS_ACTIVATIONS_NOT_IN_NNC[act.lower()]
            acts = "nnc's activation layers: " + ", ".join(k for k in ACTIVATIONS)
            return KerasCall(f"activation '{act}'", None, [advice, acts] if advice else [acts], not_in_nnc=True)
        return None
    if keras in KERAS_LAYERS_NOT_IN_NNC:
        return KerasCall(keras, None, [], not_in_nnc=True)
    if keras == "ReLU" and [(kw.arg, ast.unparse(kw.value)) for kw in call.keywords] in (
            [("max_value", "6")], [("max_value", "6.0")]) and not call.args:
        return KerasCall(keras, "relu6", ["nnc's relu6 is Keras's ReLU(max_value=6)"])  # MobileNet's
    kind = KERAS_TO_KIND.get(keras)
    if kind is None:
        return None
    spec = KINDS[kind]
    by_name = {o.name: o for o in spec.options}
    alias = {a: o.name for o in spec.options for a in o.aliases}
    values: dict[str, str] = {}
    prefix = ""
    given: list[tuple[str | None, ast.AST]] = []
    sig = _signature(keras)
    for i, arg in enumerate(call.args):
        if isinstance(arg, ast.Starred):
            return None
        given.append((sig[i] if i < len(sig) else None, arg))
    given += [(kw.arg, kw.value) for kw in call.keywords]
    for key, node in given:
        if key is None:
            notes.append(f"left out {ast.unparse(node)} (where it goes in Keras's signature is unclear)")
            continue
        name = alias.get(key, key)
        if key.endswith("regularizer") and key != "activity_regularizer" and "l2" in by_name:
            reg = _regularizer(node)
            if reg is not None:
                values.update(reg)
                continue
        try:
            v = _const(node)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            v = _callee(node) if key in ("activation", "recurrent_activation") else Ellipsis  # keras.activations.relu
        if key == "name" and isinstance(v, str) and re.fullmatch(r"[A-Za-z_]\w*", v):
            prefix = f"{v}: "
            continue
        if key in ("input_shape", "batch_input_shape") and isinstance(v, (tuple, list)):
            dims = [d for d in v if d is not None] if key == "input_shape" else [d for d in v[1:] if d is not None]
            notes.append(f"the shape goes in the input statement: input x: float32[{', '.join(map(str, dims))}]")
            continue
        if v is None:
            continue  # Keras's None: nnc's default
        if key == "activation" and v in ("linear", None):
            continue
        if name not in by_name:
            if key == "data_format" and v == "channels_last":
                continue
            if key == "axis" and v == -1:
                continue
            advice = KERAS_OPTIONS_NOT_IN_NNC.get(key)
            notes.append(f"left out {key}" + (f": {advice}" if advice else " (not in nnc)"))
            continue
        text = _value_text(by_name[name], v, ast.unparse(node)) if v is not Ellipsis else None
        if text is None:
            notes.append(f"left out {key}={ast.unparse(node)}: nnc cannot write that value")
            continue
        if by_name[name].type == "choice" and text not in by_name[name].choices:
            what = "activation " if key.endswith("activation") else ""
            notes.append(f"left out {key}: Keras's {what}{text} is not in nnc (nnc has {', '.join(by_name[name].choices)})")
            continue
        values[name] = text
    for name, default in _KERAS_DEFAULTS.items():
        if name in by_name and by_name[name].required and name not in values:
            values[name] = str(default)
    # what Keras requires and the call did not give (or nnc could not write): a placeholder
    for o in spec.options:
        if o.required and o.name not in values:
            values[o.name] = o.name.upper()
    words = [kind] + [values.pop(p) for p in spec.positional if p in values]
    words += [f"{k}={v}" for k, v in values.items()]
    line = prefix + " ".join(words)
    return KerasCall(keras, line, notes)


# Keras class names (in any case) and common words to nnc kinds, so that `Conv2D`,
# `SimpleRNN` or `convolution` get a suggestion where spelling distance finds none.
COMMON_NAMES_TO_KIND = dict(KERAS_TO_KIND_LOWER)
COMMON_NAMES_TO_KIND.update({
    "convolution": "conv2d", "conv": "conv2d", "fc": "dense", "maxpool": "maxpool2d", "avgpool": "avgpool2d",
    "batch_norm": "batchnorm", "batch_normalization": "batchnorm", "bn": "batchnorm", "layer_norm": "layernorm",
    "layer_normalization": "layernorm", "multi_head_attention": "attention", "mha": "attention",
    "leakyrelu": "leaky_relu", "zero_padding2d": "zeropad2d", "zeropadding": "zeropad2d", "upsample": "upsampling2d",
    "conv2dtranspose": "conv2d_transpose", "deconv2d": "conv2d_transpose", "deconv": "conv2d_transpose",
    "separableconv2d": "separable_conv2d", "depthwiseconv2d": "depthwise_conv2d", "simplernn": "rnn",
    "bilstm": "lstm", "bigru": "gru", "birnn": "rnn",
})
