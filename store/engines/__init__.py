"""Engines that compute the per-sample summary (``trainmap scores --engine``).

``duckdb`` (the default) runs ``store/sql/summary.sql`` in this process; ``spark`` computes
the same table with Apache Spark (``store.engines.spark``), in local mode or on a cluster,
over the same Parquet files. PySpark is an optional extra (``pip install 'trainmap[spark]'``)
imported only when the Spark engine is asked for, so the default path never needs it. This
module imports nothing heavy itself, so a command line can offer ``ENGINES`` cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from store.layout import Store

#: The engines ``summary_with`` knows, the default first.
ENGINES = ("duckdb", "spark")


def summary_with(
    engine: str, store: Store, run_ids: str | list[str], epochs: tuple[int, int] | None = None
) -> pd.DataFrame:
    """``store.sample_summary(store, run_ids, epochs)`` computed by ``engine`` (one of ``ENGINES``):
    the same columns, dtypes and rows whichever engine computes it."""
    if engine == "duckdb":
        from store.queries import sample_summary

        return sample_summary(store, run_ids, epochs)
    if engine == "spark":
        from store.engines.spark import summary_with_spark

        return summary_with_spark(store.root, run_ids, epochs=epochs)
    raise ValueError(f"unknown summary engine {engine!r}; expected one of {', '.join(ENGINES)}")
