"""`python -m kfloop` runs the CLI."""

from kfloop.cli import main

main()
