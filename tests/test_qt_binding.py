"""Guards against Qt binding releases that corrupt Python's reference counts (PySide6 6.12.0 on 3.11).

With such a release every void Qt call drops a reference to None, and the editor aborts with
"deallocating None" after a few hundred repaints.
"""
import sys

from PySide6.QtCore import QObject, QPointF


def test_void_qt_calls_keep_none_refcount(qapp):
    point, obj = QPointF(), QObject()
    before = sys.getrefcount(None)
    for _ in range(200):
        point.setX(1.0)
        obj.setObjectName("x")
    assert sys.getrefcount(None) >= before - 5
