"""`python -m worker.cli` is the `retention` command too."""

from worker.cli import main

main()
