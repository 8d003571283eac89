"""Start the server: python run.py [--flags]; see README.md or --help."""

import gc
import sys

# Importing the server allocates much and frees little: collecting garbage meanwhile is wasted start time.
gc.disable()

from server.main import main  # noqa: E402 - after the collector is paused

if __name__ == "__main__":
    sys.exit(main(sys.argv))
