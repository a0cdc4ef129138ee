"""Repository-wide pytest hooks (tests/ and the doctests of acehamil/)."""

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _restore_numpy_printoptions():
    """Undo global numpy print options a library sets on import (PySCF does: precision 6), which
    otherwise changes how later doctests print arrays."""
    saved = np.get_printoptions()
    yield
    np.set_printoptions(**saved)
