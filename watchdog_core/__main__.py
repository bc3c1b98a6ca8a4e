"""``python -m watchdog_core`` is the ``watchdog-core`` command."""

import sys

from .cli import main

sys.exit(main())
