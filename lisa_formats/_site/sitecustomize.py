"""Run at start-up by Python processes whose ``PYTHONPATH`` names this folder (see ``lisa_formats.quiet``).

Installs the log rules of :mod:`lisa_formats.quiet`, then runs the ``sitecustomize`` this one
hides, if there is one (a distribution's, a venv's), so that one still takes effect.
"""

import importlib.machinery
import importlib.util
import os
import sys

try:
    from lisa_formats.quiet import quiet_third_party

    quiet_third_party()
except Exception:  # never stop the child from starting over a log rule
    pass

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
)
if _spec is not None and _spec.loader is not None and _spec.origin != os.path.abspath(__file__):
    _hidden = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_hidden)
