#!/usr/bin/env python3
"""Decode a watchdog-core ring: python tools/read_ring.py <.ring file | session id | shm name>.

The same as ``watchdog-core read-ring``; runs from a source checkout without
installing (it puts the checkout on sys.path when the package is not importable).
Options: --last N (newest N slots), --json. Exit 2 with one line on bad input.
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
    return cli_main(["read-ring", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
