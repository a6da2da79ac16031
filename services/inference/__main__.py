"""Thin entrypoint: ``python -m services.inference [--adapter NAME=PATH ...] [--champion NAME]``.

Same options as ``spelltransfer serve inference``; the work is in ``spelltransfer.serving.vllm_server``.
On a GPU host (compose) the ``vllm/vllm-openai`` image runs ``vllm serve`` with the same flags
(``build_command`` shows them) instead.
"""

import sys

from spelltransfer.cli import main
from spelltransfer.cli.serve import serve_app  # noqa: F401  (fails early if the serve commands are broken)

if __name__ == "__main__":
    sys.argv = ["spelltransfer", "serve", "inference", *sys.argv[1:]]
    main()
