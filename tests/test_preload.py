"""The editor imports the diffusion stack in the background once its window is up."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from app.engine import preload


def test_preload_imports_the_engine_in_a_background_thread_and_freezes_its_objects():
    # A fresh interpreter, so "not imported before" means something.
    code = textwrap.dedent("""
        import gc, sys, threading
        from app.engine.preload import MODULES, preload
        assert "torch" not in sys.modules
        frozen_before = gc.get_freeze_count()
        done = preload()
        assert preload() is done                      # once per process
        assert done.wait(120)
        missing = [m for m in MODULES if m not in sys.modules]
        assert not missing, missing
        assert gc.get_freeze_count() > frozen_before + 100000
        from app.engine.diffusion import model_loader
        assert set(model_loader._shipped) == {"<|endoftext|>", "!"}   # built here, not by a model load
        for thread in [t for t in threading.enumerate() if t.name == "engine-preload"]:
            thread.join(5)
            assert not thread.is_alive()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_a_broken_install_still_sets_the_event(monkeypatch):
    monkeypatch.setattr(preload, "_thread", None)
    monkeypatch.setattr(preload, "_done", preload.threading.Event())
    done = preload.preload(("app.engine.no_such_module",))
    assert done.wait(10)


def test_quitting_while_the_engine_is_still_importing_is_clean(tmp_path):
    """The user closes the window within a second of launch, while torch is being imported: the process ends
    with status 0 and says nothing (it used to print a "could not preload" traceback every time)."""
    code = textwrap.dedent("""
        import sys
        from PySide6.QtCore import QTimer
        from PySide6.QtWidgets import QApplication
        from app.engine import preload
        import app.gui as gui

        def quit_once_importing():
            thread = preload._thread
            if thread is not None and thread.is_alive() and "torch" in sys.modules:
                QApplication.instance().quit()          # torch is being imported right now
            else:
                QTimer.singleShot(5, quit_once_importing)

        run = QApplication.exec
        QApplication.exec = staticmethod(lambda: (QTimer.singleShot(0, quit_once_importing), run())[1])
        sys.exit(gui.run_editor([]))
    """)
    env = {**__import__("os").environ, "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "preload" not in out.stderr, out.stderr[-2000:]
