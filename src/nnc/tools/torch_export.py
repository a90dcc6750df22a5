"""`nnc export torch`: a checked model as a standalone PyTorch source file, and its weights as a
state_dict.

The file needs torch only (no nnc, no numpy). Its layers are nnc.engines.torch.standalone's,
copied verbatim: that module is torch-only, so the definitions a model uses (and the helpers
they call, found by reading the module's syntax tree, never importing it) are pasted above the
model's class, one source for every exported file. Exporting needs torch: the weights are
written with torch.save, and each layer's arguments are the torch engine's (imported when a file
is generated, never at this module's import).

One place per kind, shared with the torch engine (which builds its layers from the same classes
and arguments): nnc.engines.torch.layers.TORCH_EXPORTS[kind](layer) gives the standalone class a
layer becomes and its constructor's arguments; MERGE_FUNCTIONS[merge] the function that joins a
block's branches. tests/torch_engine/test_torch_export.py fails when a kind or a merge lacks its entry.

The model's state_dict keys are the checkpoint's names (`conv2d_1.kernel`, Keras layouts), with
'.' inside a weight's short name written '__' (`attention_1.query__kernel`); a layer named like
an nn.Module attribute or a Python keyword (`eval`, `forward`, `to`, `class`) becomes `layer_NAME`.
"""

from __future__ import annotations

import ast
import functools
import keyword
import os
from pathlib import Path

from nnc.lang.model import Layer, Model, Node
from nnc.tools.keras_io import layer_text

STANDALONE = Path(__file__).resolve().parents[1] / "engines" / "torch" / "standalone.py"
"""The torch-only source the files are made of (read as text, never imported here)."""

# --- the standalone source: its definitions and what each one uses ------------------------------


@functools.lru_cache(maxsize=1)
def standalone_definitions() -> tuple[str, dict[str, str], dict[str, frozenset[str]]]:
    """(the module's import lines, {top-level name: its source}, {name: the top-level names it
    uses}), read from standalone.py's text (never imported: torch need not be installed)."""
    text = STANDALONE.read_text(encoding="utf-8")
    tree = ast.parse(text)
    lines = text.splitlines()
    imports, defs, uses = [], {}, {}
    for node in tree.body:
        start = (node.decorator_list[0].lineno if getattr(node, "decorator_list", None) else node.lineno) - 1
        # the comment lines right above a definition belong to it
        while start > 0 and lines[start - 1].startswith("#") and not lines[start - 1].startswith("# ---"):
            start -= 1
        segment = "\n".join(lines[start : node.end_lineno])
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(segment)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defs[node.name] = segment
            uses[node.name] = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            for t in node.targets:
                defs[t.id] = segment
                uses[t.id] = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
    uses = {name: frozenset(u & (set(defs) - {name})) for name, u in uses.items()}
    return "\n".join(imports), defs, uses


def needed(names: set[str], uses: dict[str, set[str]]) -> set[str]:
    """`names` and every definition they use, transitively."""
    out, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(uses[name])
    return out


# --- the generated file ---------------------------------------------------------------------------

_MODULE_ATTRIBUTES = frozenset("""
T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda double dump_patches
eval extra_repr float forward get_buffer get_extra_state get_parameter get_submodule half ipu load_state_dict
modules mtia named_buffers named_children named_modules named_parameters parameters register_backward_hook
register_buffer register_forward_hook register_forward_pre_hook register_full_backward_hook
register_full_backward_pre_hook register_load_state_dict_post_hook register_load_state_dict_pre_hook
register_module register_parameter register_state_dict_post_hook register_state_dict_pre_hook requires_grad_
set_extra_state set_submodule share_memory state_dict to to_empty train training type xpu zero_grad
INPUT_SHAPE INPUT_DTYPE OUTPUT_SHAPE
""".split())
"""Names a layer's attribute must not take (nn.Module's, and the generated class's own)."""


def class_name(model_name: str, taken: set[str]) -> str:
    name = "".join(p[:1].upper() + p[1:] for p in model_name.split("_") if p) or "Model"
    if not name[0].isalpha():
        name = "Model" + name
    while name in taken or keyword.iskeyword(name):
        name += "Model"
    return name


def attribute_names(model: Model) -> dict[str, str]:
    """Layer name -> its attribute in the generated class (the name itself where it can be)."""
    out, used = {}, set()
    for layer in model.layers:
        name = layer.name
        if keyword.iskeyword(name) or name in _MODULE_ATTRIBUTES or name.startswith("_"):
            name = "layer_" + name.lstrip("_")
        while name in used or name in _MODULE_ATTRIBUTES:
            name += "_"
        used.add(name)
        out[layer.name] = name
    return out


def _literal(v) -> str:
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, float):
        return repr(float(v))
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple):
        return "(" + ", ".join(_literal(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _shape_text(shape) -> str:
    return "[batch" + "".join(f", {d}" for d in shape) + "]"


class _Writer:
    def __init__(self, model: Model, attrs: dict[str, str]):
        from nnc.engines.torch.layers import MERGE_FUNCTIONS, TORCH_EXPORTS  # needs torch (the engine's package)

        self.exports, self.merges = TORCH_EXPORTS, MERGE_FUNCTIONS
        self.model, self.attrs = model, attrs
        self.init: list[str] = []
        self.body: list[str] = []
        self.classes: set[str] = set()
        self.functions: set[str] = set()
        self.count = 0

    def layer(self, layer: Layer) -> str:
        cls, args = self.exports[layer.kind](layer)
        self.classes.add(cls)
        attr = self.attrs[layer.name]
        call = f"{cls}(" + ", ".join(f"{k}={_literal(v)}" for k, v in args.items()) + ")"
        line = f"        self.{attr} = {call}"
        if len(line) > 120 and args:
            inner = []
            for k, v in args.items():
                arg = f"            {k}={_literal(v)},"
                if len(arg) > 120 and isinstance(v, dict):
                    entries = "".join(f"                {_literal(n)}: {_literal(x)},\n" for n, x in v.items())
                    arg = f"            {k}={{\n{entries}            }},"
                inner.append(arg)
            line = f"        self.{attr} = {cls}(\n" + "\n".join(inner) + "\n        )"
        self.init.append(line)
        return attr

    def stack(self, nodes: list[Node], src: str, dst: str, indent: str) -> None:
        """Lines that run `nodes` on `src`, leaving the result in `dst`."""
        for node in nodes:
            if isinstance(node, Layer):
                attr = self.layer(node)
                name = "" if attr == node.name else f"{node.name}: "
                comment = f"# {name}{layer_text(node.kind, node.options)} -> {_shape_text(node.output_shape)}"
                code = f"{indent}{dst} = self.{attr}({src})"
                if len(code) + 2 + len(comment) <= 120:
                    self.body.append(f"{code}  {comment}")
                else:
                    self.body += [f"{indent}{comment}", code]
            elif node.merge is None:  # repeat: its body in sequence
                self.body.append(f"{indent}# {node.name}: repeat {node.options.get('times', '')}".rstrip())
                for branch in node.branches:
                    self.stack(branch, src, dst, indent)
                    src = dst if branch else src
            else:
                fn = self.merges[node.merge]
                self.functions.add(fn)
                what = "x + its body" if node.kind == "residual" else f"{node.kind} of {len(node.branches)} branches"
                self.body.append(f"{indent}# {node.name}: {what} -> {_shape_text(node.output_shape)}")
                outs = []
                for branch in node.branches:
                    if not branch:
                        outs.append(src)
                        continue
                    self.count += 1
                    b = f"b{self.count}"
                    self.stack(branch, src, b, indent)
                    outs.append(b)
                axis = node.options.get("axis", -1) if node.merge == "concat" else -1
                extra = f", axis={int(axis)}" if axis != -1 else ""
                self.body.append(f"{indent}{dst} = {fn}([{', '.join(outs)}]{extra})")
            src = dst


def generate(model: Model, module: str, weights_file: str, spec_file: str = "", origin: str = "") -> str:
    """The source of the standalone file: the layers it needs (standalone.py's), then the model's
    class and `load()`. `weights_file`: the state_dict's file name as load() finds it (beside
    the .py file)."""
    imports, defs, uses = standalone_definitions()
    attrs = attribute_names(model)
    w = _Writer(model, attrs)
    w.stack(model.body if model.body is not None else model.layers, "x", "x", "        ")
    keep = needed(w.classes | w.functions | {"Layer"}, uses)
    seen: set[str] = set()
    cls = class_name(model.name, set(defs) | {"F", "Model"})
    where = weights_file if os.path.isabs(weights_file) else f"{weights_file} beside this file"
    inp = model.input
    dtype = "torch.int64" if inp.dtype == "int64" else "torch.float32"
    what = (f"token ids (int64, 0..{inp.vocab - 1})" if inp.dtype == "int64" else "float32, channels-last")
    parts = [
        f'"""{model.name}: a PyTorch module written by `nnc export torch`'
        + (f" from {os.path.basename(spec_file)}" if spec_file else "") + ".",
        "",
        "Standalone: it needs torch (2.1 or later) and nothing else. The input is channels-last, as",
        f"the spec's (and Keras's): {_shape_text(inp.shape)} {what}; the output",
        f"{_shape_text(model.output_shape)} is what Keras's model computes (the final activation included).",
        "Weights are in Keras's layouts, under the checkpoint's names (LAYER.kernel, ...; '.' inside a",
        "weight's name written '__').",
        "",
        f"    from {module} import load" if module.isidentifier() else "    load = ...  # this file's load()",
        f"    model = load()  # the weights from {where}, in eval mode",
        f"    y = model(x)    # x: {_shape_text(inp.shape)}",
        "",
        "model.train() turns dropout on and makes batchnorm use (and update) the batch's statistics;",
        "model.eval() turns them back off." + (f" Weights: {origin}." if origin else ""),
        '"""',
        "",
        imports,
        "",
        "# --- layers: nnc's, with Keras's semantics " + "-" * 56,
    ]
    previous_assign = False
    for name in defs:
        if name in keep and defs[name] not in seen:
            seen.add(defs[name])
            assign = name.isupper()  # module constants: one paragraph
            parts += [defs[name]] if assign and previous_assign else ["", "", defs[name]]
            previous_assign = assign
    parts += ["", "", f"# --- the model {'-' * 83}", "", ""]
    parts.append(f"class {cls}(nn.Module):")
    parts.append(f'    """{model.name}: {model.total_params:,} parameters; input {_shape_text(inp.shape)}, '
                 f'output {_shape_text(model.output_shape)}."""')
    parts.append("")
    parts.append(f"    INPUT_SHAPE = {_literal(tuple(inp.shape))}")
    parts.append(f"    INPUT_DTYPE = {dtype}")
    parts.append(f"    OUTPUT_SHAPE = {_literal(tuple(model.output_shape))}")
    parts.append("")
    parts.append("    def __init__(self):")
    parts.append("        super().__init__()")
    parts.extend(w.init)
    parts.append("")
    parts.append("    def forward(self, x):")
    parts.append(f"        # x: {_shape_text(inp.shape)}")
    parts.extend(w.body)
    parts.append("        return x")
    parts += ["", "",
              "def load(path=None, device=\"cpu\"):",
              f'    """{cls}() with the weights of `path` (default: {where}), in eval mode."""',
              "    if path is None:",
              "        import os",
              "",
              f"        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), {_literal(weights_file)})",
              f"    model = {cls}()",
              "    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))",
              "    return model.to(device).eval()",
              ""]
    return "\n".join(parts)


def state_dict_keys(model: Model) -> dict[str, str]:
    """The generated module's state_dict keys -> the checkpoint's names, in the model's order."""
    attrs = attribute_names(model)
    return {f"{attrs[layer.name]}.{short.replace('.', '__')}": f"{layer.name}.{short}"
            for layer in model.layers for short in layer.weights}


TORCH_MISSING = "writing the weights (a PyTorch state_dict) needs torch: pip install 'nnc[torch]'"


def write(model: Model, weights: dict, py_path: str, pt_path: str, spec_file: str = "", origin: str = "",
          inputs: tuple[str, ...] = ()) -> None:
    """Write the standalone module to `py_path` and its state_dict (torch.save) to `pt_path`,
    each atomically; without torch, a UserError (exit 2) before anything is written."""
    import io

    import numpy as np

    from nnc.lang.errors import UserError
    from nnc.lang.weights import atomic_open

    module = os.path.splitext(os.path.basename(py_path))[0]
    pt_name = os.path.basename(pt_path)
    if os.path.dirname(os.path.abspath(pt_path)) != os.path.dirname(os.path.abspath(py_path)):
        pt_name = os.path.abspath(pt_path)  # load() finds it where it is
    try:
        import torch
    except ImportError:
        raise UserError(TORCH_MISSING) from None
    text = generate(model, module, pt_name, spec_file=spec_file, origin=origin)
    state = {key: torch.from_numpy(np.ascontiguousarray(weights[name], dtype=np.float32))
             for key, name in state_dict_keys(model).items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_open(pt_path, "wb", inputs=inputs) as f:
        f.write(buf.getvalue())
    with atomic_open(py_path, "w", inputs=inputs) as f:
        f.write(text)
