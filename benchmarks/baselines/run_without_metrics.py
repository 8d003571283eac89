"""run.py with the metrics left out (make_metrics returning None): the other side of reads.py's measurement 4."""

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
gc.disable()  # as run.py does while the server is imported (server.main's main() freezes and enables it)

import server.main  # noqa: E402 - after the repository is on the path and the collector is paused

server.main.make_metrics = lambda: None

if __name__ == "__main__":
    sys.exit(server.main.main(sys.argv))
