"""Latent Canvas entry point: `python main.py [IMAGE]` opens the editor; fill/expand/styles run the CLI."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from app.cli import COMMANDS, run
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help")):
        return run(argv)
    from app.gui import run_editor
    return run_editor(argv)


if __name__ == "__main__":
    sys.exit(main())
