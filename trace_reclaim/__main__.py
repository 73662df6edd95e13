"""``python -m trace_reclaim``: the same as the ``trace-reclaim`` command."""

import sys

from trace_reclaim.cli import main

if __name__ == "__main__":
    sys.exit(main())
