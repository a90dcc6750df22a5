"""Fixtures shared by the training tests that compare with Keras."""

import os

import pytest


@pytest.fixture(scope="module")
def keras():
    """Keras 3 on its torch backend (skips where the reference extra is not installed)."""
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


@pytest.fixture
def keras64(keras):
    """Keras computing in float64 (its learning-rate variable and schedules follow floatx)."""
    old = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        yield keras
    finally:
        keras.config.set_floatx(old)
