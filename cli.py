"""Run trace-reclaim from a checkout: ``python3 cli.py ARGS``.

A thin shim: the tool is the ``trace_reclaim`` package (``trace_reclaim/cli.py``),
installed as the ``trace-reclaim`` command and runnable as ``python -m trace_reclaim``.
"""

import sys

from trace_reclaim.cli import main

if __name__ == "__main__":
    sys.exit(main())
