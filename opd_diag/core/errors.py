"""One exception type for everything a user can get wrong.

The CLI turns an :class:`OpdDiagError` into a one-paragraph message and exit code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class OpdDiagError(ValueError):
    """Bad input or an impossible request: says what was wrong, where, and what to do."""
