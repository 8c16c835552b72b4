"""Keeps at most one diffusion model in memory: loading another frees the previous one first."""
from __future__ import annotations

import logging
import threading

from app.engine.diffusion.devices import DevicePlan, free_device_memory
from app.engine.diffusion.model_files import ModelSource

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, loader=None) -> None:
        self._lock = threading.RLock()
        self._loader = loader
        self._key: tuple | None = None
        self._model = None
        self.loads = 0                      # how many times a model was actually loaded

    @property
    def current(self):
        return self._model

    def get(self, source: ModelSource, plan: DevicePlan, progress=None):
        """The model for (source, plan), loading it (and freeing any other) when it is not the current one."""
        # Not the whole plan: its memory savers follow free memory, which the loaded model itself changes.
        key = (source, plan.device, plan.dtype_name)
        with self._lock:
            if self._key == key and self._model is not None:
                return self._model
            self.free()
            loader = self._loader
            if loader is None:
                from app.engine.diffusion.model_loader import load_model as loader
            model = loader(source, plan, progress)
            self._key, self._model = key, model
            self.loads += 1
            log.info("loaded %s", model.describe())
            return model

    def free(self) -> None:
        with self._lock:
            if self._model is None:
                return
            device = self._model.plan.device
            self._key, self._model = None, None
            free_device_memory(device)


MODELS = ModelManager()
