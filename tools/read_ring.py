#!/usr/bin/env python3
"""Decode a watchdog-core ring: python tools/read_ring.py <.ring file | session id | shm name>.

The same as ``watchdog-core read-ring``, under its own name; runs from a source checkout
without installing anything (it puts the checkout on sys.path when the package is not
importable, and needs only the standard library, ``--json`` included). Options: --last N
(newest N slots), --json. Exit 2 with one line on bad input.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    try:
        from watchdog_core.cli import main as cli_main
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from watchdog_core.cli import main as cli_main
    return cli_main(sys.argv[1:], prog=os.path.basename(sys.argv[0]) or "read_ring.py",
                    command="read-ring")


if __name__ == "__main__":
    sys.exit(main())
