"""Tracking tests drive real tiny training runs: reuse the training fixtures (loaded by path,
since tests/ is not a package)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_train_fixtures", Path(__file__).parents[1] / "train" / "conftest.py")
_train_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_train_fixtures)

tiny_data_dir = _train_fixtures.tiny_data_dir
tiny_config = _train_fixtures.tiny_config
