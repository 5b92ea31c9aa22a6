"""Fixtures shared by the circuit tests: the planted induction toy (hand-set weights) and its prompts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the shared toys importable
from circuit_toys import planted_induction_model, planted_prompts  # noqa: E402


@pytest.fixture(scope="module")
def planted():
    """The planted induction model with its repeated-span prompts and the mask of second-copy positions."""
    model = planted_induction_model()
    tokens, mask = planted_prompts()
    return model, tokens, mask
