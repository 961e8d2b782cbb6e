"""The store's own errors. Library code raises these; the CLI turns them into one line."""

from __future__ import annotations


class StoreError(Exception):
    """Something about the store (path, layout, contents) is not as expected."""


class RunNotFoundError(StoreError):
    """A run id that the store does not hold."""
