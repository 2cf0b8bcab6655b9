"""`python -m nasrun <command> ...` is `nasrun <command> ...`."""

from nasrun.cli import main

main()
