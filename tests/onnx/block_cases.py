"""Models with blocks (LANGUAGE.md, "Blocks"), shared by the block tests of tests/backend,
tests/onnx and tests/train, written in the language's own syntax and checked by nnc's checker.
"""

from __future__ import annotations

from nnc.lang.checker import check_source
from nnc.lang.model import Block, Model

# name: (input, body). Each merge kind, residual, repeat, nesting (blocks inside branches of
# other blocks), a tensor read by several branches, concat on other axes.
BLOCK_SPECS: dict[str, tuple[str, str]] = {
    "residual_conv": ("float32[6, 5, 3]", """
conv2d 4 kernel=3 padding=same activation=relu
residual {
  conv2d 4 kernel=3 padding=same activation=tanh
  conv2d 4 kernel=3 padding=same
}
relu
flatten
dense 3
"""),
    "add_projection": ("float32[7, 6, 2]", """
add {
  branch { conv2d 4 kernel=1 stride=2 }
  branch {
    conv2d 4 kernel=3 stride=2 padding=same activation=relu
    conv2d 4 kernel=3 padding=same
  }
}
globalavgpool
dense 2
"""),
    "concat_identity": ("float32[6, 6, 2]", """
concat {
  branch { }
  branch { conv2d 3 kernel=3 padding=same }
}
maxpool2d 2
flatten
dense 3
"""),
    "concat_three_axis1": ("float32[4, 5]", """
concat axis=1 {
  branch { dense 5 activation=tanh }
  branch { }
  branch { dense 5 }
}
flatten
dense 2
"""),
    "concat_sequence": ("float32[7, 3]", """
conv1d 4 kernel=3 padding=same
concat {
  branch { conv1d 2 kernel=3 padding=same activation=relu }
  branch { maxpool1d 3 stride=1 padding=same }
}
globalmaxpool
"""),
    "multiply": ("float32[5]", """
dense 6 activation=tanh
multiply {
  branch { dense 6 activation=sigmoid }
  branch { }
}
dense 2
"""),
    "multiply_three": ("float32[5]", """
multiply {
  branch { dense 4 }
  branch { dense 4 activation=tanh }
  branch { dense 4 }
}
"""),
    "average": ("float32[5, 4]", """
average {
  branch { dense 3 }
  branch { dense 3 activation=relu }
  branch { dense 3 use_bias=false }
}
flatten
dense 2
"""),
    "maximum": ("float32[6]", """
dense 4
maximum {
  branch { dense 4 activation=tanh }
  branch { }
  branch { dense 4 }
}
dense 2
"""),
    "minimum": ("float32[6, 5, 2]", """
minimum {
  branch { conv2d 2 kernel=3 padding=same }
  branch { }
}
conv2d 3 kernel=2 stride=2
flatten
"""),
    "subtract": ("float32[6]", """
subtract {
  branch { dense 4 activation=tanh }
  branch { dense 4 }
}
dense 2
"""),
    "repeat_residual": ("float32[6]", """
dense 8
repeat 2 { residual { dense 8 activation=relu } }
dense 3
"""),
    "nested": ("float32[6, 6, 2]", """
conv2d 4 kernel=3 padding=same
stage1: add {
  branch { }
  branch {
    concat {
      branch { conv2d 2 kernel=3 padding=same activation=relu }
      branch {
        conv2d 2 kernel=1
        residual { conv2d 2 kernel=3 padding=same }
      }
    }
    maximum {
      branch { conv2d 4 kernel=1 }
      branch { }
    }
  }
}
flatten
dense 3
"""),
    "rank1_multi_read": ("float32[5]", """
dense 4
stage: residual {
  subtract {
    branch { dense 4 }
    branch { }
  }
  average {
    branch { dense 4 activation=relu }
    branch { }
    branch { dense 4 activation=tanh }
  }
}
dense 2 activation=softmax
"""),
    "pool_in_branch": ("float32[6, 6, 2]", """
concat {
  branch {
    conv2d 3 kernel=3 padding=same activation=relu
    maxpool2d 2
  }
  branch { maxpool2d 2 }
  branch {
    relu
    avgpool2d 2
  }
}
flatten
dense 2
"""),
    "ends_in_concat": ("float32[6, 3]", """
concat axis=1 {
  branch { conv1d 3 kernel=2 }
  branch { conv1d 3 kernel=3 stride=2 }
}
"""),
    "embedding_branches": ("int64[6] vocab=9", """
concat {
  branch { embedding 3 }
  branch {
    embedding 2
    conv1d 2 kernel=3 padding=same
  }
}
gru 3
"""),
    "transformer_repeat": ("float32[6, 8]", """
repeat 2 {
  residual {
    layernorm
    attention heads=2 key_dim=4
  }
}
globalavgpool
dense 3
"""),
    "dropout_in_branches": ("float32[6]", """
dense 8
add {
  branch {
    dropout 0.5
    dense 8
  }
  branch { dropout 0.25 }
}
dense 2
"""),
}


def spec_text(name: str) -> str:
    inp, body = BLOCK_SPECS[name]
    return f"model {name}\ninput x: {inp}\n{body}"


def block_model(name_or_text: str) -> Model:
    """The checked model of a case (by name) or of a spec's text."""
    text = spec_text(name_or_text) if name_or_text in BLOCK_SPECS else name_or_text
    r = check_source(text, "<blocks>")
    assert r.ok, [d.message for d in r.diagnostics]
    assert any(isinstance(n, Block) for n in r.model.body) or "{" not in text.split("train", 1)[0]
    return r.model
