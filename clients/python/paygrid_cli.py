"""The paygrid CLI (also installed as the `paygrid` command):

  .venv/bin/python clients/python/paygrid_cli.py --help
"""

import sys

from paygrid_client.cli import main

if __name__ == "__main__":
    sys.exit(main())
