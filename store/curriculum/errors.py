"""The one error every curriculum module raises: its message says what was wrong."""

from __future__ import annotations

from store.errors import StoreError


class CurriculumError(StoreError, ValueError):
    """A curriculum file or builder input that cannot be used; the message says why."""
