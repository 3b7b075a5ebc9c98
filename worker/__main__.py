"""`python -m worker` is the `retention` command."""

from worker.cli import main

main()
