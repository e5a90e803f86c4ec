"""``python -m lisa_demo train|compare OUTDIR``."""

import sys

from lisa_demo.cli import main

sys.exit(main())
