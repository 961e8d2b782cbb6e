"""The ``trainmap`` command line: one module per command, ``main`` in ``training.cli.main``.

This package is the only place that imports both sides of the project: ``training`` (to
train, only inside ``trainmap train``) and ``dashboard`` (to serve, only inside ``trainmap
ui``). Everything at the top of its modules is torch-free, so ``trainmap --help`` and the
commands that read a store start without torch and work on an install without the
``train`` extra.
"""

from __future__ import annotations

from training.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
