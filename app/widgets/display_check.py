"""Before the window is made: can Qt show one here? Otherwise one line saying what is missing and what to do.

Without this, Qt's xcb platform plugin aborts the process (exit 134) with its generic "no Qt platform plugin
could be initialized. Reinstalling the application may fix this problem", which tells a user neither that
the X11 libraries are missing nor which. Only Linux's X11 path is checked: a Wayland session, another
platform chosen with QT_QPA_PLATFORM, macOS and Windows are left to Qt.
"""
from __future__ import annotations

import ctypes
import os
import sys

# What Qt 6's xcb plugin loads beyond the Qt libraries PySide6 ships (soname -> Debian/Ubuntu package).
# (ldd of PySide6 6.11's libqxcb.so and libQt6XcbQpa.so.6)
XCB_LIBRARIES = {
    "libxcb.so.1": "libxcb1", "libX11-xcb.so.1": "libx11-xcb1", "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1", "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0", "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0", "libxcb-shm.so.0": "libxcb-shm0", "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1", "libxcb-xfixes.so.0": "libxcb-xfixes0", "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libEGL.so.1": "libegl1", "libfontconfig.so.1": "libfontconfig1",
}
NO_SCREEN = "or run without a window: the command line (latent-canvas fill ...), or QT_QPA_PLATFORM=offscreen"


def display_problem(environ: dict | None = None, platform: str | None = None,
                    libraries: dict[str, str] | None = None) -> str | None:
    """One line saying why the editor's window cannot open here, or None when it can (or Qt will tell)."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return None
    chosen = environ.get("QT_QPA_PLATFORM", "").strip()
    if chosen and not chosen.startswith("xcb"):
        return None                   # offscreen, wayland, vnc, eglfs ...: the user chose; Qt reports
    if not chosen and environ.get("WAYLAND_DISPLAY") and environ.get("XDG_SESSION_TYPE") == "wayland":
        return None                   # Qt picks its Wayland plugin there
    display = environ.get("DISPLAY", "")
    if not display:
        hint = " (a Wayland session without DISPLAY: set QT_QPA_PLATFORM=wayland)" \
            if environ.get("WAYLAND_DISPLAY") else ""
        return (f"cannot open the editor's window: no display (DISPLAY is not set){hint}; start it from a "
                f"desktop session, {NO_SCREEN}")
    missing = [name for name in (libraries or XCB_LIBRARIES) if not _loadable(name)]
    if missing:
        packages = " ".join((libraries or XCB_LIBRARIES)[name] for name in missing)
        return (f"cannot open the editor's window: Qt needs the X11 libraries {', '.join(missing)}, which are "
                f"not installed; on Debian or Ubuntu: sudo apt-get install {packages}; {NO_SCREEN}")
    if not _x_server_answers(display):
        return (f"cannot open the editor's window: the X display {display!r} does not answer (is the X server "
                f"running, and is DISPLAY right?); {NO_SCREEN}")
    return None


def _loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def _x_server_answers(display: str) -> bool:
    """Connect to the X server as Qt will (libxcb), and disconnect."""
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return True                   # reported as a missing library already
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(display.encode(), None)
    if not connection:
        return False
    try:
        return xcb.xcb_connection_has_error(connection) == 0
    finally:
        xcb.xcb_disconnect(connection)
