import sys

from eval_harness.cli import main

sys.exit(main())
