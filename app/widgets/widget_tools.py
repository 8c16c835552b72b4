"""Small helpers every panel uses: names for automation and screen readers, and one refresh after a burst of
signals."""
from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QWidget


def named(widget: QWidget, name: str, accessible: str, tip: str = "") -> QWidget:
    """`widget` with its object name, accessible name and (when given) tooltip set."""
    widget.setObjectName(name)
    widget.setAccessibleName(accessible)
    if tip:
        widget.setToolTip(tip)
    return widget


def refresh_once_after(owner: QWidget, refresh, signals) -> QTimer:
    """Call `refresh` once after any of `signals` (several may come from one change), in the next event loop
    turn; the timer belongs to `owner`."""
    timer = QTimer(owner)
    timer.setSingleShot(True)
    timer.setInterval(0)
    timer.timeout.connect(refresh)
    for signal in signals:
        signal.connect(timer.start)
    return timer
