"""``python -m pipeline`` is the ``inferwatch`` command."""

from pipeline.launcher import main

if __name__ == "__main__":
    main()
