"""Benchmark 7: memory with a big document after many accepted fills (is the undo budget honoured?).

A real MainWindow (offscreen) holds a 4096 x 4096 RGB document. Each of 50 rounds clears the mask (it is
kept after Accept), paints a 256 x 256 mask square the way a brush stroke is recorded (MaskPatchChange of
the painted rectangle), fills it through window.session.fill with the classic engine (OpenCV, no model),
waits for the variant and accepts it (session.accept: a new generative layer, one DocumentChange on the
undo stack, whose states share every layer they have in common). The history's byte count is what app/editor/history.py
trims to (its budget, DEFAULT_BUDGET_BYTES); the bytes it really holds count each shared array once.
Peak RSS is resource.getrusage's ru_maxrss of this process.

    python -m benchmarks.memory_bench --fills 50 --document 4096
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit_result, peak_rss_bytes, photo, rss_bytes

MIB = 2 ** 20


def held_bytes(history) -> int:
    """Bytes the undo stack really keeps alive: every array counted once, however many states share it."""
    seen, total = set(), 0
    for change in history.changes():
        for value in vars(change).values():
            if hasattr(value, "nbytes") and hasattr(value, "dtype"):
                arrays = [value]
            elif hasattr(value, "layers"):                   # a DocumentState: its layers' arrays and its mask
                arrays = [*value.layers.arrays().values(), *([] if value.mask is None else [value.mask])]
            else:
                continue
            for array in arrays:
                base = array if array.base is None else array.base
                if id(base) not in seen:
                    seen.add(id(base))
                    total += int(base.nbytes)
    return total


def run(args) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    scratch = Path(tempfile.mkdtemp(prefix="lc-memory-bench-"))
    os.environ["XDG_CONFIG_HOME"] = str(scratch)
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["latent-canvas-benchmark"])
    from app.core.changes import MaskPatchChange
    from app.core.document import Document
    from app.core.geometry import Rect
    from app.editor.history import DEFAULT_BUDGET_BYTES
    from app.editor.job_builder import JobSettings
    from app.editor.model_library import ModelLibrary
    from app.widgets.main_window import MainWindow

    window = MainWindow(settings=scratch / "settings.json",
                        library=ModelLibrary(scratch / "models.json"), recovery_root=scratch / "recovery")
    window.resize(1400, 900)
    window.show()
    side = args.document
    window.state.set_document(Document.from_image(photo(side, side)))
    app.processEvents()
    state, session = window.state, window.session
    rss_start = rss_bytes()
    document_bytes = state.document.nbytes()
    job = JobSettings(model="classic", seed=1, variants=1, feather=8)
    trace = []
    start = time.perf_counter()
    for index in range(args.fills):
        state.clear_mask()
        doc = state.document
        x = 256 + (index * 397) % (side - 768)
        y = 256 + (index * 631) % (side - 768)
        rect = Rect(x, y, 256, 256)
        before = doc.begin_mask_edit()                 # as the brush does: a fill shared the last mask
        doc.mask[rect.slices()] = 255
        state.push_applied(MaskPatchChange.capture(doc, rect, before, "Brush stroke"))
        del before
        loop = QEventLoop()
        session.variants_ready.connect(lambda variants: loop.quit() if variants else None)
        session.busy_changed.connect(lambda busy: None if busy else QTimer.singleShot(50, loop.quit))
        if not session.fill(job):
            raise RuntimeError(f"the fill did not start: {window.last_error}")
        loop.exec()
        session.variants_ready.disconnect()
        session.busy_changed.disconnect()
        session.busy_changed.connect(window._refresh)            # what MainWindow wired up
        if not session.accept(0):
            raise RuntimeError(f"fill {index + 1} produced no variant: {window.last_error}")
        app.processEvents()
        trace.append({"fill": index + 1, "rss_mib": round(rss_bytes() / MIB, 1),
                      "history_mib": round(state.history.nbytes() / MIB, 1),
                      "held_mib": round(held_bytes(state.history) / MIB, 1),
                      "levels": state.history.stack.count()})
        if (index + 1) % 10 == 0:
            t = trace[-1]
            print(f"after {index + 1} fills: RSS {t['rss_mib']} MiB, history {t['history_mib']} MiB "
                  f"(really held {t['held_mib']} MiB) in {t['levels']} levels", flush=True)
    seconds = time.perf_counter() - start
    history = state.history
    peak = peak_rss_bytes()
    history_bytes = history.nbytes()
    levels = history.stack.count()
    # The undo stack must stay within its budget (or at its minimum number of levels); the process must not
    # grow by more than that budget plus a few documents' worth of working copies (request, result, canvas).
    allowance = DEFAULT_BUDGET_BYTES + 6 * document_bytes
    figures = [
        {"name": f"undo history after {args.fills} accepted fills / budget", "value": round(history_bytes / MIB, 1),
         "target": round(DEFAULT_BUDGET_BYTES / MIB, 1), "unit": "MiB",
         "passed": history_bytes <= DEFAULT_BUDGET_BYTES or levels <= history.min_levels, "benchmark": 7,
         "levels": levels},
        {"name": "peak RSS growth over the document alone", "value": round((peak - rss_start) / MIB, 1),
         "target": round(allowance / MIB, 1), "unit": "MiB", "passed": peak - rss_start <= allowance,
         "benchmark": 7, "peak_rss_mib": round(peak / MIB, 1), "rss_before_mib": round(rss_start / MIB, 1)},
    ]
    window.session.shutdown()
    history.stack.setClean()
    window.close()
    return {"document": f"{side}x{side} RGB", "document_mib": round(document_bytes / MIB, 1),
            "fills": args.fills, "engine": "classic (OpenCV Telea)", "seconds": round(seconds, 1),
            "budget_mib": round(DEFAULT_BUDGET_BYTES / MIB, 1), "min_levels": history.min_levels,
            "history_mib": round(history_bytes / MIB, 1), "held_mib": trace[-1]["held_mib"], "levels": levels,
            "rss_before_mib": round(rss_start / MIB, 1), "peak_rss_mib": round(peak / MIB, 1),
            "rss_end_mib": trace[-1]["rss_mib"], "trace": trace, "figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=50)
    parser.add_argument("--document", type=int, default=4096)
    emit_result(run(parser.parse_args()))


if __name__ == "__main__":
    main()
