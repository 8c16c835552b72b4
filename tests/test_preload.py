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
        from app.engine import model_loader
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
