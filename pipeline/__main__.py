"""``python -m pipeline`` is the ``inferwatch`` command."""

from pipeline.cli import main

main()
