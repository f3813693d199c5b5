"""`python -m shoal_operator` = `shoal operator`."""

from __future__ import annotations

import sys

from shoal_cli.main import main

if __name__ == "__main__":
    sys.exit(main(["operator", *sys.argv[1:]]))
