"""``python -m engineroom``: the same command line as the ``engineroom`` script."""

from engineroom.cli import main

if __name__ == "__main__":
    main()
