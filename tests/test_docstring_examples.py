"""The examples in docstrings are true: every module with ``>>>`` examples runs them (``+SKIP`` ones excepted)."""
from __future__ import annotations

import doctest
import importlib

import pytest
import torch

MODULES = ["blogrr_nnu.networks", "blogrr_nnu.channels", "blogrr_nnu.reports.parser",
           "blogrr_nnu.trainers.cgc_trainer", "blogrr_nnu.sliding_window", "blogrr_nnu.metrics"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
