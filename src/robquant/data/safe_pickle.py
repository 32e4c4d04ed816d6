"""Unpickling that admits only the numpy array types a data batch needs.

A pickle can run arbitrary code through the globals it names. The CIFAR batch files are
pickles, so they are read with :class:`RestrictedUnpickler`, which refuses every global except
numpy's array reconstruction helpers.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from robquant.errors import DataIntegrityError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` admits only numpy's array types."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise DataIntegrityError(
                f"refusing to unpickle global {module}.{name}: data batches may only hold "
                f"numpy arrays, lists, dicts, numbers and strings")
        return super().find_class(module, name)


def safe_loads(data: bytes, encoding: str = "latin1") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Raises:
        DataIntegrityError: if the pickle names any global outside the allow-list or is malformed.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except DataIntegrityError:
        raise
    except Exception as exc:  # malformed pickles raise many kinds of error
        raise DataIntegrityError(f"malformed pickle: {exc}") from None
