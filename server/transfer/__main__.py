"""python -m server.transfer SOURCE_URL TARGET_URL [--replace] [--batch-size N] [--db-wait S]"""

import gc
import sys

# As in run.py: importing allocates much and frees little, so collecting garbage meanwhile is wasted time.
gc.disable()

from server.transfer.command import main  # noqa: E402 - after the collector is paused

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
