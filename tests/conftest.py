import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight SD 1.5 / SDXL models (tests/model_factory.py), each built once."""
    from tests.model_factory import TinyModels

    return TinyModels(tmp_path_factory.mktemp("tiny_models"))
