"""Start the server: python run.py [--flags]; see README.md or --help."""

import sys

from server.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
