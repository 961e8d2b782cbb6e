"""``python -m store.recording SPOOL PARENT_PID``: the recording writer process, started by
``store.recording.process.WriterProcess``; it reads its messages on stdin."""

import sys
from pathlib import Path

from store.recording.process import serve

if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
