"""Which engines exist and how to build one from a model id (what `--model` and the model picker hold).

Built-in engines are registered by id; "NAME@SERVER" gets a ComfyEngine (a checkpoint on a ComfyUI server);
any other id that names an existing file or folder, or looks like a Hugging Face repo id, gets a
DiffusionEngine (imported only then, so torch loads only when needed)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from app.engine.base import Engine
from app.engine.classic import ClassicEngine
from app.engine.events import EngineError
from app.engine.model_ids import looks_like_path, looks_like_repo_id, path_exists, server_model

DEFAULT_MODEL = "classic"
EngineFactory = Callable[[], Engine]



@dataclass(frozen=True)
class _Entry:
    label: str
    factory: EngineFactory


class EngineRegistry:
    """Engines by id, in registration order. New engines are one `register` call each."""

    def __init__(self, builtin: bool = True, default_id: str = DEFAULT_MODEL) -> None:
        self._entries: dict[str, _Entry] = {}
        self.default_id = default_id
        if builtin:
            self.register("classic", "Classic fill (OpenCV Telea)", lambda: ClassicEngine("telea"))
            self.register("classic-ns", "Classic fill (OpenCV Navier-Stokes)", lambda: ClassicEngine("ns"))

    def register(self, engine_id: str, label: str, factory: EngineFactory, *, replace: bool = False) -> None:
        if not engine_id or engine_id != engine_id.strip():
            raise ValueError(f"invalid engine id {engine_id!r}")
        if engine_id in self._entries and not replace:
            raise ValueError(f"engine {engine_id!r} is already registered")
        self._entries[engine_id] = _Entry(label, factory)

    def entries(self) -> list[tuple[str, str]]:
        """(id, label) of every registered engine, in registration order."""
        return [(engine_id, entry.label) for engine_id, entry in self._entries.items()]

    def __contains__(self, engine_id: object) -> bool:
        return engine_id in self._entries

    def label(self, engine_id: str) -> str:
        entry = self._entries.get(engine_id)
        return entry.label if entry else engine_id

    def create(self, model_id: str | None = None) -> Engine:
        """A new engine for `model_id` (the default when empty); EngineError says what is wrong otherwise."""
        name = (model_id or "").strip() or self.default_id
        entry = self._entries.get(name)
        if entry is not None:
            return entry.factory()
        if server_model(name) is not None:
            from app.engine.comfy.engine import ComfyEngine

            return ComfyEngine(name)
        if path_exists(name) or looks_like_repo_id(name):
            from app.engine.diffusion.engine import DiffusionEngine

            return DiffusionEngine(name)
        raise EngineError(self._unknown_model_message(name))

    def _unknown_model_message(self, name: str) -> str:
        if looks_like_path(name):
            return f"model not found: {name}"
        known = ", ".join(self._entries) or "none"
        return f"model not found: {name} (built-in engines: {known})"
