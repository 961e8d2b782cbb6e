"""``python -m training.cli ...`` is ``trainmap ...`` (reruns launched from the dashboard use it)."""

import sys

from training.cli.main import main

sys.exit(main())
