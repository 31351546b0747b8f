"""``python -m mpbn`` is the ``mpbn`` command."""

import sys

from mpbn.cli import main

if __name__ == "__main__":
    sys.exit(main())
