"""Skip marks for the optional peer, imported by ``bench/conftest.py`` and the benchmark files.

torch is imported here, when ``bench/conftest.py`` is loaded: before any Numba kernel runs (see
``fastrnn.bench.import_torch``).
"""

import pytest

try:
    import torch
except ImportError:
    torch = None

NO_TORCH = pytest.mark.skipif(torch is None, reason="torch is not installed (pip install -e '.[peers]')")


def torch_param(value="torch"):
    """``value`` as a parameter that is skipped when torch is missing. The skip is a mark, decided
    before any fixture is set up: a skip from inside a fixture or the test would come after
    ``benchmark`` was requested, and pytest-benchmark then warns that its fixture was not used
    (an error under ``filterwarnings = error``)."""
    return pytest.param(value, marks=NO_TORCH)
