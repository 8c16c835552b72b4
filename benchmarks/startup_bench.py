"""Benchmark 6: cold start, from process start to the editor window shown and painted.

Each run starts a fresh `python -c` process that runs main.py as `python main.py` would (runpy, no
arguments), with one addition made only in that process: MainWindow.showEvent is wrapped to install an
application event filter that notes the time of the window's first paint, which modules are loaded
then (torch must not be), and quits. The clock starts in the parent right before the process is spawned,
so interpreter start-up and every import count. QT_QPA_PLATFORM=offscreen (unless --platform is given) and
an empty XDG_CONFIG_HOME, so no saved window state or model list changes what starts up.

The first start is a warm-up (the OS file cache) and reported separately.

    python -m benchmarks.startup_bench --runs 5
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.common import ROOT, emit_result, summary

CHILD = r"""
import json, sys, time
sys.argv = ["main.py"]
marks = {}
import app.widgets.main_window as _mw
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication

class _FirstPaint(QObject):
    def eventFilter(self, obj, event):
        if "paint" not in marks and event.type() == QEvent.Type.Paint:
            window = obj.window() if hasattr(obj, "window") else None
            if isinstance(window, _mw.MainWindow):
                marks["paint"] = time.time()
                marks["torch_loaded"] = "torch" in sys.modules
                marks["heavy_modules"] = sorted(m for m in ("torch", "diffusers", "transformers", "cv2",
                                                            "numpy", "PIL", "safetensors") if m in sys.modules)
                marks["module_count"] = len(sys.modules)
                QTimer.singleShot(0, QApplication.instance().quit)
        return False

_show = _mw.MainWindow.showEvent
def _show_event(self, event):
    if "show" not in marks:
        marks["show"] = time.time()
        app = QApplication.instance()
        marks["filter"] = _FirstPaint(app)
        app.installEventFilter(marks["filter"])
    return _show(self, event)
_mw.MainWindow.showEvent = _show_event

import runpy
try:
    runpy.run_path("main.py", run_name="__main__")
except SystemExit:
    pass
marks.pop("filter", None)
marks["exit"] = time.time()
print("STARTUP " + json.dumps(marks), flush=True)
"""


def one_start(platform: str) -> dict:
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = platform
    env["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="lc-startup-")
    env.pop("PYTHONPATH", None)            # as a user starts it: from the project folder
    start = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    lines = [line for line in out.stdout.splitlines() if line.startswith("STARTUP ")]
    if not lines:
        raise RuntimeError(f"the editor did not start (exit {out.returncode}):\n{out.stderr[-2000:]}")
    marks = json.loads(lines[-1][len("STARTUP "):])
    if "paint" not in marks:
        raise RuntimeError("the window was never painted")
    return {"shown_s": marks["show"] - start, "painted_s": marks["paint"] - start,
            "torch_loaded": marks["torch_loaded"], "heavy_modules": marks["heavy_modules"],
            "module_count": marks["module_count"]}


def run(args) -> dict:
    warm_up = one_start(args.platform)
    print(f"warm-up start: painted after {warm_up['painted_s']:.3f} s", flush=True)
    starts = []
    for index in range(args.runs):
        result = one_start(args.platform)
        starts.append(result)
        print(f"start {index + 1}: shown {result['shown_s']:.3f} s, painted {result['painted_s']:.3f} s, "
              f"torch loaded: {result['torch_loaded']}", flush=True)
    painted = summary([s["painted_s"] for s in starts])
    shown = summary([s["shown_s"] for s in starts])
    torch_loaded = any(s["torch_loaded"] for s in starts)
    figures = [
        {"name": "process start to window painted", "value": painted["median"], "target": 2.0, "unit": "s",
         "passed": painted["median"] <= 2.0, "benchmark": 6, "worst": painted["max"]},
        {"name": "torch imported at window shown", "value": "yes" if torch_loaded else "no", "target": "no",
         "unit": "", "passed": not torch_loaded, "benchmark": 6},
    ]
    return {"platform": args.platform, "painted_s": painted, "shown_s": shown, "warm_up": warm_up,
            "heavy_modules": starts[-1]["heavy_modules"], "module_count": starts[-1]["module_count"],
            "figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--platform", default="offscreen")
    emit_result(run(parser.parse_args()))


if __name__ == "__main__":
    main()
