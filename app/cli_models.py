"""`latent-canvas models list | download NAME|REPO_ID | remove NAME`: the model library from the command line.

The same list, downloads and checks as the window's welcome page and model manager; progress goes to stderr.
"""
from __future__ import annotations

import argparse
import sys
import time

from app.engine.events import EngineError
from app.engine.hub_download import describe_bytes as describe


def add_model_commands(sub) -> None:
    models = sub.add_parser("models", help="list, download and remove models (the editor's model list)")
    actions = models.add_subparsers(dest="action", required=True, parser_class=sub._parser_class)
    actions.add_parser("list", help="the installed models, then the recommended ones not installed yet")
    get = actions.add_parser("download", help="download a recommended model by name, or any Hugging Face repo "
                                              "id, in one weight variant, and add it to the model list")
    get.add_argument("name", metavar="NAME|REPO_ID")
    remove = actions.add_parser("remove", help="take a model off the model list (its files stay, unless --delete)")
    remove.add_argument("name", metavar="NAME", help="its repo id, path, label or recommended name")
    remove.add_argument("--delete", action="store_true",
                        help="also delete its files, if they are in the Hugging Face cache")


def run_model_command(args: argparse.Namespace, usage_error: type[Exception]) -> int:
    from app.editor.model_library import ModelLibrary
    from app.editor.user_folders import model_list_path

    library = ModelLibrary(model_list_path())
    for problem in library.problems:
        print(f"note: {problem}", file=sys.stderr)
    if args.action == "list":
        return _list(library)
    if args.action == "download":
        return _download(args.name, library, usage_error)
    return _remove(args.name, args.delete, library, usage_error)


def _list(library) -> int:
    from app.core.styles import read_all_styles
    from app.editor.model_inventory import format_size, installed_models
    from app.editor.recommended_models import is_installed, read_recommended
    from app.editor.user_folders import user_styles_path

    found = installed_models(library, read_all_styles(user_styles_path()).styles)
    if found:
        print("Installed:")
        for model in found:
            family = f", {model.family}" if model.family else ""
            where = f": {model.location}" if model.location != model.name else ""     # what --model takes
            print(f"  {model.name}{where}  ({model.kind}{family}, {format_size(model.size_on_disk)}, {model.source})")
    else:
        print("No models installed yet.")
    missing = [m for m in read_recommended() if not is_installed(m)]
    if missing:
        print("Recommended (`latent-canvas models download NAME`):")
        for model in missing:
            print(f"  {model.name}  {model.title}: {format_size(model.download_bytes)}; {model.good_for}")
    return 0


def _download(name: str, library, usage_error: type[Exception]) -> int:
    from app.editor.model_downloads import install_repo
    from app.editor.recommended_models import find_recommended
    from app.engine.model_ids import looks_like_repo_id

    chosen = find_recommended(name)
    repo = chosen.repo if chosen is not None else name.strip()
    if chosen is None and not looks_like_repo_id(repo):
        raise usage_error(f"{name!r} is neither a recommended model (see `latent-canvas models list`) nor a Hugging "
                          "Face repo id (owner/name)")
    bar = _ConsoleProgress()
    try:
        done = install_repo(repo, library, bar.show, on_plan=bar.planned)
    except KeyboardInterrupt:
        bar.end()
        print(f"stopped: what arrived is kept; run `latent-canvas models download {name}` again to go on",
              file=sys.stderr)
        return 130
    bar.end()
    what = {"model": f"added {repo} to the model list: use it with --model {repo}",
            "controlnet": f"added the ControlNet {repo}: use it with --controlnet {repo}",
            "preview decoder": f"{repo} is ready: diffusion jobs use it for previews",
            "annotator": f"{repo} is ready: use it with --annotator {repo}"}[done.kind]
    print(f"downloaded {describe(done.plan.total_bytes)} ({len(done.plan.files)} files"
          f"{', ' + done.plan.variant if done.plan.variant else ''}) into {done.folder}", file=sys.stderr)
    print(what)
    return 0


def _remove(name: str, delete: bool, library, usage_error: type[Exception]) -> int:
    from app.editor.model_inventory import delete_from_disk, delete_plan, installed_models
    from app.editor.recommended_models import find_recommended

    chosen = find_recommended(name)
    wanted = {name.strip()} | ({chosen.repo} if chosen is not None else set())
    models = [m for m in installed_models(library) if wanted & {m.location, m.name, m.label, m.repo_id}]
    listed = [m for m in models if m.listed] or models
    if not listed:
        raise usage_error(f"no installed model is called {name!r} (see `latent-canvas models list`)")
    model = listed[0]
    if not delete:
        if not library.remove(model.location):
            raise EngineError(f"{model.name} is not on the model list (it is found in the Hugging Face cache); "
                              "add --delete to delete its files")
        print(f"removed {model.name} from the model list; its files are kept")
        return 0
    plan = delete_plan(model)
    if plan.problem:
        raise EngineError(plan.problem)
    if plan.any_outside_cache:
        outside = ", ".join(str(p) for p in plan.outside_cache)
        library.remove(model.location)
        raise EngineError(f"removed {model.name} from the model list, but its files are outside the Hugging Face "
                          f"cache and are kept; delete them yourself if you mean to: {outside}")
    delete_from_disk(model, library)
    print(f"removed {model.name} and deleted {describe(plan.size)} from the Hugging Face cache")
    return 0


class _ConsoleProgress:
    """One line on stderr, rewritten in place on a terminal, printed every 10 % otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = -1
        self.last = 0.0
        self.width = 0

    def planned(self, plan) -> None:
        variant = f" ({plan.variant} weights)" if plan.variant else ""
        print(f"downloading {plan.repo_id}: {len(plan.files)} files, {describe(plan.total_bytes)}{variant}",
              file=sys.stderr)

    def show(self, step) -> None:
        fraction = step.done / step.total if step.total else 1.0
        line = f"{fraction:6.1%} · {describe(step.done)} of {describe(step.total)}{step.pace}"
        if self.tty:
            now = time.monotonic()
            if now - self.last >= 0.2 or fraction >= 1:
                self.last = now
                sys.stderr.write("\r" + line.ljust(self.width))
                sys.stderr.flush()
                self.width = len(line)
        elif int(fraction * 10) > self.shown:
            self.shown = int(fraction * 10)
            print(line, file=sys.stderr)

    def end(self) -> None:
        if self.tty and self.width:
            sys.stderr.write("\n")
