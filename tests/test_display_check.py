"""Without a usable display the editor says in one line what is missing, instead of Qt's abort."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.widgets.display_check import _loadable, display_problem

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the X11 check is Linux's")
def test_no_display_is_one_line_and_exit_1(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"))
    out = subprocess.run([sys.executable, str(ROOT / "main.py")], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 1, out.stderr[-2000:]
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("latent-canvas: error: cannot open the editor's window: no display (DISPLAY is not set)")
    assert "QT_QPA_PLATFORM=offscreen" in line


def test_missing_x11_libraries_are_named_with_their_packages():
    line = display_problem({"DISPLAY": ":0"}, "linux", {"libc.so.6": "libc6", "libno-such-lib.so.7": "no-such7"})
    assert "libno-such-lib.so.7" in line and "sudo apt-get install no-such7" in line and "libc.so.6" not in line


@pytest.mark.skipif(not _loadable("libxcb.so.1"), reason="libxcb is not installed here")
def test_an_x_display_that_does_not_answer_is_named():
    line = display_problem({"DISPLAY": ":54321"}, "linux", {"libxcb.so.1": "libxcb1"})
    assert "':54321' does not answer" in line


@pytest.mark.parametrize("environ, platform", [
    ({"QT_QPA_PLATFORM": "offscreen"}, "linux"),
    ({"QT_QPA_PLATFORM": "wayland", "WAYLAND_DISPLAY": "wayland-0"}, "linux"),
    ({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}, "linux"),
    ({}, "win32"),
    ({}, "darwin"),
])
def test_other_platforms_are_left_to_qt(environ, platform):
    assert display_problem(environ, platform) is None
