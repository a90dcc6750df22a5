"""The package's layout holds its design (../shared/STYLE.md, "Where things live"): the arrows
between nnc's packages point down, commands -> tools / training / onnx / engines -> lang.

Every import in src/nnc is read (at module level and inside functions alike), so a new import
that points up -- the language importing an engine, one engine importing the other -- fails here.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import nnc

SRC = Path(nnc.__file__).resolve().parent

# package -> the nnc modules it may import besides its own package and nnc.lang (prefixes);
# commands/, cli.py and nnc/__init__.py are the top and may import anything
ALLOWED = {
    "lang": (),
    "onnx": ("nnc.engines.numpy.fpenv",),  # the floating-point flags its sessions run under
    # an engine applies the training rules (losses, optimizers, schedules), never the loop
    "engines.numpy": ("nnc.training.losses", "nnc.training.optim", "nnc.training.schedules"),
    "engines.torch": ("nnc.training.losses", "nnc.training.optim", "nnc.training.schedules"),
    "training": ("nnc.engines",),  # the loop asks the engine it is given by name for each step
    # torch_export writes the torch engine's layers (standalone.py) with its per-kind arguments
    "tools": ("nnc.onnx", "nnc.training", "nnc.engines.numpy", "nnc.engines.torch.layers"),
}


def _package(module: str) -> str:
    """nnc.engines.torch.modules -> engines.torch; nnc.lang.kinds -> lang; nnc.cli -> cli."""
    parts = module.split(".")[1:]
    if parts[:1] == ["engines"] and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0] if parts else ""


def _imports(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, imported name) of every nnc import in `path`, relative ones resolved."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    package = parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = list(package[: len(package) - (node.level - 1)])
                base = ".".join(up + ([node.module] if node.module else []))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name.startswith("nnc.")]


def against_the_arrows(root: Path) -> list[str]:
    wrong = []
    for path in sorted(root.rglob("*.py")):
        own = _package(".".join(path.relative_to(root.parent).with_suffix("").parts))
        if own not in ALLOWED:
            continue
        for line, name in _imports(root, path):
            target = _package(name)
            if target in (own, "lang", "grammar") or name.startswith(ALLOWED[own]):
                continue
            if name == "nnc.__version__":
                continue
            wrong.append(f"{path.relative_to(root)}:{line} ({own}) imports {name}")
    return wrong


def test_imports_point_down():
    wrong = against_the_arrows(SRC)
    assert not wrong, "imports against the layout's arrows:\n" + "\n".join(wrong)


def test_the_packages_exist_as_the_design_names_them():
    for package in ("lang", "onnx", "engines/numpy", "engines/torch", "training", "tools", "commands"):
        assert (SRC / package / "__init__.py").is_file(), package
    flat = sorted(p.name for p in SRC.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "cli.py"], f"modules outside the packages: {flat}"


def test_a_wrong_import_is_reported(tmp_path):
    """The walk itself works: upward imports planted in a copy of the tree are reported, lazy ones too."""
    copy = tmp_path / "nnc"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    kinds = copy / "lang" / "kinds.py"
    kinds.write_text(kinds.read_text() + "\n\ndef _late():\n    from nnc.engines.numpy import kernels\n")
    modules = copy / "engines" / "torch" / "modules.py"
    modules.write_text(modules.read_text() + "\nfrom ..numpy.kernels import KERNELS\n")
    wrong = "\n".join(against_the_arrows(copy))
    assert "lang/kinds.py" in wrong and "nnc.engines.numpy.kernels" in wrong
    assert "engines/torch/modules.py" in wrong and "nnc.engines.numpy.kernels.KERNELS" in wrong
    assert not against_the_arrows(SRC)
