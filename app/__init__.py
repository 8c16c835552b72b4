"""Latent Canvas: a desktop image editor built around Generative Fill with latent diffusion.

`from app import MainWindow` works without importing Qt for command-line use: Qt loads on first access.
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "MainWindow":
        from app.widgets.main_window import MainWindow
        return MainWindow
    raise AttributeError(f"module 'app' has no attribute {name!r}")
