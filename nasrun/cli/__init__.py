"""The command line: ``nasrun <command>`` checks the command line and dispatches; help and ``show`` live here.

Nothing in this package imports torch at module level, so help and a mistyped key answer fast.
"""

from nasrun.cli.dispatch import main

__all__ = ["main"]
