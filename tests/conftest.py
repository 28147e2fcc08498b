"""Shared test fixtures: a fixed seed, and the float32 policy restored after each test."""

import keras
import pytest


@pytest.fixture(autouse=True)
def _seeded_float32():
    keras.utils.set_random_seed(0)
    yield
    # A test that switches to mixed_bfloat16 must not leak it into the next one.
    keras.config.set_dtype_policy("float32")
