"""``python -m lisa_plugin``: the ``lisa-plugin`` command (see :mod:`lisa_plugin.tools.cli`)."""

import sys

from lisa_plugin.tools.cli import main

sys.exit(main())
