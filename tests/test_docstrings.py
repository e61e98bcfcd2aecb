"""The docstring examples (``>>>``) run and print what they say (doctest)."""

import doctest
import importlib
from pathlib import Path

import pytest

import tfcompress

PKG = Path(tfcompress.__file__).resolve().parent
MODULES = sorted(
    ".".join(p.relative_to(PKG.parent).with_suffix("").parts).replace(".__init__", "")
    for p in PKG.rglob("*.py") if "__pycache__" not in p.parts and ">>> " in p.read_text())


def _run(name):
    module = importlib.import_module(name)
    return doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                           verbose=False, report=True)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = _run(name)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


def test_many_examples_really_run():
    """Examples marked ``+SKIP`` (training runs, real data) do not count: most must run."""
    attempted = {name: _run(name).attempted for name in MODULES}
    assert sum(attempted.values()) >= 40, attempted
    assert sum(1 for n in attempted.values() if n) >= 12, attempted
