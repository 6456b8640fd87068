"""Process helpers shared with the engine tests (tests/engine/engine_util.py), imported without its directory."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_engine_util", Path(__file__).parents[1] / "engine" / "engine_util.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
alive, assert_dies = _mod.alive, _mod.assert_dies
