"""BackgroundCall: every outcome reaches the UI thread, also under load and when the caller drops it."""
from __future__ import annotations

import gc

import numpy as np
from PySide6.QtCore import QObject

from app.editor.background import BackgroundCall


class _Receiver(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[tuple] = []

    def done(self, result, error) -> None:
        self.got.append((result, error))


def _work(index: int) -> int:
    np.random.default_rng(index).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    gc.collect(1)                           # what made a queued signal from the thread go missing
    return index


def _fail(index: int) -> int:
    raise ValueError(f"bad {index}")


def test_every_result_and_every_error_is_delivered(qtbot):
    receiver = _Receiver()
    for index in range(60):
        call = BackgroundCall(_work if index % 2 else _fail, index, parent=receiver)
        call.finished.connect(receiver.done)
        call.start()
        del call
        qtbot.wait(5)
    qtbot.waitUntil(lambda: len(receiver.got) == 60, timeout=10000)
    results = sorted(r for r, e in receiver.got if e is None)
    errors = sorted(str(e) for r, e in receiver.got if e is not None)
    assert results == list(range(1, 60, 2)) and len(errors) == 30 and errors[0].startswith("bad ")
    qtbot.waitUntil(lambda: not BackgroundCall._running, timeout=5000)
