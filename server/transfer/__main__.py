"""python -m server.transfer SOURCE_URL TARGET_URL [--replace] [--batch-size N] [--db-wait S]"""

import sys

from server.transfer.command import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
