"""Thin entrypoint: ``python -m services.loadtest --base-url URL --model NAME --users 16 --run-time 30``.

Same options as ``spelltransfer serve loadtest``; the work is in ``spelltransfer.serving.loadtest``,
the Locust user in ``services/loadtest/locustfile.py``.
"""

import sys

from spelltransfer.cli import main

if __name__ == "__main__":
    sys.argv = ["spelltransfer", "serve", "loadtest", *sys.argv[1:]]
    main()
