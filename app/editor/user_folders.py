"""Where the editor keeps the user's files: one place for the window and the command line alike."""
from __future__ import annotations

from pathlib import Path

ORGANIZATION, APPLICATION = "LatentCanvas", "Latent Canvas"


def config_folder() -> Path:
    """The per-user config folder: the model list, the remembered settings, the user's own styles."""
    from PySide6.QtCore import QCoreApplication, QStandardPaths

    if not QCoreApplication.organizationName():          # the command line has no QApplication to name it
        QCoreApplication.setOrganizationName(ORGANIZATION)
        QCoreApplication.setApplicationName(APPLICATION)
    folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppConfigLocation)
    return Path(folder or Path.home() / ".config" / "latent-canvas")


def user_styles_path() -> Path:
    return config_folder() / "styles.json"


def learned_styles_folder() -> Path:
    """Where learned styles' runs go by default: one folder per style (its LoRA, samples, checkpoint)."""
    return config_folder() / "learned-styles"


def model_list_path() -> Path:
    """The user's model list (app.editor.model_library)."""
    return config_folder() / "models.json"
