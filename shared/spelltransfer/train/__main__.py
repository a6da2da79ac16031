"""``python -m spelltransfer.train [train options]``: the train command, Unsloth-safe.

Unsloth patches transformers/peft/trl when it is imported, so it must come first; the full CLI
imports other command groups that may pull in transformers. This entry imports unsloth first
when CUDA and the package are present, then runs the ordinary ``spelltransfer train``.
"""

import sys

from spelltransfer.train.backends import unsloth_available

if unsloth_available():
    import unsloth  # noqa: F401  (before transformers, on purpose)

from spelltransfer.cli import main  # noqa: E402

sys.argv = [sys.argv[0], "train", *sys.argv[1:]]
main()
