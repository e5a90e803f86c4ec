"""``python -m eval_harness demo OUTDIR`` (also ``lisa-demo OUTDIR``): the whole product, offline.

``data`` writes benchmark-format data we generated, ``pretrain`` gives the tiny model some
language first, ``pipeline`` runs the stages (build, pre-train, ``axolotl train`` x3, compare).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """The ``lisa-demo`` console script: ``python -m eval_harness demo`` under a shorter name."""
    from eval_harness.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])
