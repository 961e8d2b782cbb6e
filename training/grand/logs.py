"""Warnings that GraNd logs once per process (a fallback reason, a skipped step), not per step."""

from __future__ import annotations

import logging
from typing import Any

_warned: set[str] = set()


def warn_once(logger: logging.Logger, key: str, message: str, *args: Any) -> None:
    """``logger.warning(message, *args)`` the first time ``key`` is seen in this process."""
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(message, *args)


def forget_warnings() -> None:
    """Log every warning again the next time (for tests)."""
    _warned.clear()
