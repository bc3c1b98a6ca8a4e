"""``watchdog-core schema``: the JSON Schema of the diagnostics file."""

from __future__ import annotations

import argparse
from typing import TextIO

from . import json_text

NAME = "schema"
HELP = "print the JSON Schema of the diagnostics file"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="accepted for symmetry; "
                        "the schema is always JSON")


def run(args: argparse.Namespace, out: TextIO) -> int:
    from .._diagnostics import json_schema

    out.write(json_text(json_schema()))
    return 0
