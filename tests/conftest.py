import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never read or write the user's own settings, model list or recovery data.
_SCRATCH = tempfile.mkdtemp(prefix="latent-canvas-tests-")
for _name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
    os.environ[_name] = os.path.join(_SCRATCH, _name.lower())
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


import pytest  # noqa: E402
from hypothesis import settings as _hypothesis_settings  # noqa: E402

from tests.fuzzing import PROFILE as _FUZZ_PROFILE  # noqa: E402

_hypothesis_settings.load_profile(_FUZZ_PROFILE)


@pytest.fixture
def photo(tmp_path):
    """A 64x48 random RGB photo saved as PNG: (path, pixels)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight SD 1.5 / SDXL models (tests/model_factory.py), each built once."""
    from tests.model_factory import TinyModels

    return TinyModels(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def tiny_controlnets(tmp_path_factory):
    """Tiny random ControlNets fitting the tiny models (tests/control_factory.py), each built once."""
    from tests.control_factory import tiny_controlnets_fixture

    return tiny_controlnets_fixture(tmp_path_factory)


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """A stand-in of the Hugging Face Hub on 127.0.0.1 serving tiny models (tests/hub_standin.py)."""
    from tests.hub_standin import standin_with_tiny_models

    server = standin_with_tiny_models(tmp_path_factory.mktemp("standin"))
    yield server
    server.stop()


@pytest.fixture
def online(hub, tmp_path, monkeypatch):
    """The stand-in is the Hub, with no faults set and nothing served yet; the Hugging Face cache is empty."""
    from huggingface_hub import constants

    from tests.test_diffusion_engine import MANAGER

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub.served.clear()
    hub.bytes_sent = 0
    hub.faults.drop_after.clear()
    hub.faults.wrong_bytes.clear()
    hub.faults.short.clear()
    hub.faults.rate = 0
    MANAGER.free()
    yield cache
    MANAGER.free()
