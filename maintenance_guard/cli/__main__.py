"""`python -m maintenance_guard.cli`: the same command line as `maintenance-guard`."""

from . import main

main()
