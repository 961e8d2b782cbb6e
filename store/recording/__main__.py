"""``python -m store.recording SPOOL PARENT_PID``: the recording writer process, started by
``store.recording.process.WriterProcess``; it reads its messages on stdin.

The writer runs beside training for the whole fit, so its memory counts against the
recorder's budget (benchmarks/results/recorder_scale.md). pyarrow imports pandas the first
time it converts a NumPy array (its pandas shim asks whether the array is a pandas
object): 40 MB in this process, which never reads or writes a DataFrame. An import
finder that refuses ``pandas`` makes pyarrow take its no-pandas path; nothing else runs in
this process. (``process.py`` also starts it with pyarrow's system memory pool, which
hands freed memory back instead of keeping it for later.)
"""

import sys
from pathlib import Path


class _NoPandas:
    """Refuses ``import pandas`` in the writer process (module docstring says why)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("the recording writer process does not use pandas")
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, _NoPandas)
    from store.recording.process import serve

    serve(Path(sys.argv[1]), int(sys.argv[2]))
