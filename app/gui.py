"""Start the editor window."""
from __future__ import annotations

import sys
from pathlib import Path

PRELOAD_AFTER_MS = 300      # after the window's first paint


def run_editor(argv: list[str]) -> int:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.engine.preload import preload
    from app.engine.worker import exit_code_after_shutdown
    from app.widgets.main_window import MainWindow

    if QApplication.instance() is None:
        from app.widgets.display_check import display_problem

        problem = display_problem()
        if problem:                   # Qt would abort with a generic message (exit 134)
            print(f"latent-canvas: error: {problem}", file=sys.stderr)
            return 1
    app = QApplication.instance() or QApplication([sys.argv[0], *[a for a in argv if a.startswith("-")]])
    app.setOrganizationName("LatentCanvas")
    app.setApplicationName("Latent Canvas")
    window = MainWindow()
    window.show()
    QTimer.singleShot(PRELOAD_AFTER_MS, preload)     # torch & co. load while the user looks at the window
    images = [a for a in argv if not a.startswith("-")]
    if not window.offer_recovery():
        if images:
            window.open_image(Path(images[0]))
        window.models.welcome_if_first_launch()
    return exit_code_after_shutdown(app.exec())
