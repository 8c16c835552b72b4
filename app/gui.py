"""Start the editor window."""
from __future__ import annotations

import sys
from pathlib import Path


def run_editor(argv: list[str]) -> int:
    from PySide6.QtWidgets import QApplication

    from app.widgets.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0], *[a for a in argv if a.startswith("-")]])
    app.setOrganizationName("LatentCanvas")
    app.setApplicationName("Latent Canvas")
    window = MainWindow()
    window.show()
    images = [a for a in argv if not a.startswith("-")]
    if images:
        window.open_image(Path(images[0]))
    return app.exec()
