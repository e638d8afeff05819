"""Checks of arguments that callers pass to the library's public functions."""

from __future__ import annotations

import numpy as np


def is_positive_int(value) -> bool:
    """A whole number of at least 1: an int or numpy integer, not a bool (True is not 1 document),
    not a float (2.5 candidates) or a string ("10")."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1
