"""Downloads from a stand-in of the Hugging Face Hub (tests/hub_standin.py) on 127.0.0.1: one weight variant,
resumed partial files, sizes and hashes checked, gated repos, a full disk, cancel, offline use afterwards."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from app.editor.model_downloads import DownloadJob, install_repo
from app.editor.model_library import ModelLibrary
from app.editor.recommended_models import Machine, find_recommended, is_installed, read_recommended, recommend
from app.engine import hub_download
from app.engine.events import EngineError, EventKind
from app.engine.hub_download import DownloadCancelled, DownloadControl, HubDownload
from app.engine.hub_files import DownloadError, choose_files, gated_line, plan_download
from tests.hub_standin import FP16_ONLY, FP32_ONLY, GATED, REPO, SD15, UNET16
from tests.test_diffusion_engine import fill_request, run



def library(tmp_path) -> ModelLibrary:
    return ModelLibrary(tmp_path / "models.json")


# -- which files ----------------------------------------------------------------------------------------

SD_REPO = ["model_index.json", ".gitattributes", "README.md", "sd-v1-5-inpainting.ckpt", "v1-inpainting.png",
           "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json",
           "safety_checker/config.json", "safety_checker/model.safetensors", "safety_checker/pytorch_model.bin",
           "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
           "text_encoder/pytorch_model.bin", "text_encoder/pytorch_model.fp16.bin", "tokenizer/merges.txt",
           "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
           "unet/config.json", "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.bin",
           "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
           "unet/diffusion_pytorch_model.non_ema.safetensors", "vae/config.json",
           "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors"]


@pytest.mark.parametrize("listing, expected, variant", [
    (SD_REPO, ["model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
               "text_encoder/model.fp16.safetensors", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
               "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "unet/config.json",
               UNET16, "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors"], "fp16"),
    # no fp16 safetensors: the full-precision safetensors, never a pickle beside them
    (["config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors", "images/a.png"],
     ["config.json", "diffusion_pytorch_model.safetensors"], ""),
    # only pickles: the fp16 one
    (["config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"],
     ["config.json", "diffusion_pytorch_model.fp16.bin"], "fp16"),
    # a sharded fp16 UNet: its index and every shard, not the fp32 shards
    (["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors.index.json",
      "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
      "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
      "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
      "unet/diffusion_pytorch_model-00001-of-00002.fp16.safetensors",
      "unet/diffusion_pytorch_model-00002-of-00002.fp16.safetensors"],
     ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model-00001-of-00002.fp16.safetensors",
      "unet/diffusion_pytorch_model-00002-of-00002.fp16.safetensors",
      "unet/diffusion_pytorch_model.safetensors.index.fp16.json"], "fp16"),
    # a transformers model (an annotator): model.safetensors and its processor's config
    (["config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin", "README.md"],
     ["config.json", "model.safetensors", "preprocessor_config.json"], ""),
])
def test_only_the_files_a_model_needs_in_one_variant_are_chosen(listing, expected, variant):
    assert choose_files(listing) == (sorted(expected), variant)


# -- downloading ----------------------------------------------------------------------------------------

def test_a_download_fetches_one_variant_and_the_model_fills_offline_afterwards(online, hub, tmp_path, monkeypatch):
    models = library(tmp_path)
    done = install_repo(REPO, models)
    fetched = hub.fetched(REPO)
    weights = [p for p in fetched if p.endswith((".safetensors", ".bin", ".ckpt"))]
    assert weights == ["text_encoder/model.fp16.safetensors", UNET16, "vae/diffusion_pytorch_model.fp16.safetensors"]
    assert not any(p.startswith("safety_checker") or p == "README.md" for p in fetched)
    assert hub.bytes_sent == done.plan.total_bytes
    assert [e.location for e in models.entries()] == [REPO]
    assert models.entries()[0].label == f"{REPO} — Stable Diffusion 1.x inpainting"
    assert ModelLibrary(tmp_path / "models.json").find(REPO) is not None        # saved

    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")             # nothing listens there
    result, _ = run(fill_request(None, model=REPO, device="cpu", steps=2))
    assert result.kind == EventKind.RESULT, result.message
    request = fill_request(None, model=REPO, device="cpu")
    kept = request.mask == 0
    kept[70:140, 110:190] = False                                               # the feathered edge
    assert np.array_equal(result.variants[0].image[kept], request.image[kept])


def test_a_repo_with_only_full_precision_weights_fetches_those(online, hub, tmp_path):
    done = install_repo(FP32_ONLY, library(tmp_path))
    assert done.plan.variant == ""
    assert UNET16 not in hub.fetched(FP32_ONLY)
    assert "unet/diffusion_pytorch_model.safetensors" in hub.fetched(FP32_ONLY)
    assert "unet/diffusion_pytorch_model.bin" not in hub.fetched(FP32_ONLY)


def test_an_fp16_only_repo_id_typed_as_a_model_downloads_and_fills(online, hub):
    seen = []
    result, progress = run(fill_request(None, model=FP16_ONLY, device="cpu", steps=2), on_event=seen.append)
    assert result.kind == EventKind.RESULT, result.message
    assert any("downloading stand-in/tiny-fp16" in (e.message or "") for e in progress)
    assert all(".fp16." in p for p in hub.fetched(FP16_ONLY) if p.endswith(".safetensors"))


def test_cancelling_a_fill_that_is_downloading_its_model_stops_it_and_the_next_fill_goes_on(online, hub):
    from app.engine.events import CancelToken

    hub.faults.rate = 2_000_000                         # the download takes a few seconds: Cancel lands inside it
    cancel = CancelToken()

    def cancel_mid_download(event):
        if "downloading stand-in/tiny-fp16" in (event.message or "") and 0.2 < event_fraction(event) < 0.9:
            cancel.cancel()
    result, progress = run(fill_request(None, model=FP16_ONLY, device="cpu", steps=2), cancel, cancel_mid_download)
    assert result.kind == EventKind.CANCELLED, result.message
    assert any(e.message.endswith(" s left") and "/s · " in e.message for e in progress if e.message)
    folder = online / "models--stand-in--tiny-fp16"
    assert not (folder / "refs" / "main").exists()      # not installed: a later load does not take it as whole
    hub.faults.rate = 0
    result, _ = run(fill_request(None, model=FP16_ONLY, device="cpu", steps=2))
    assert result.kind == EventKind.RESULT, result.message
    whole = [path for _, path, wanted in hub.served if not wanted]
    resumed = [wanted for _, _, wanted in hub.served if wanted]
    assert len(whole) == len(set(whole)) and len(resumed) == 1          # went on from the partial file:
    assert int(resumed[0].removeprefix("bytes=").rstrip("-")) > 0      # no file asked for from its start twice


def event_fraction(event) -> float:
    done, total = (event.message or "").split(": ", 1)[1].split(" · ")[0].split(" of ")
    return parse_bytes(done) / parse_bytes(total)


def parse_bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"bytes": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


def test_a_connection_dropped_mid_file_goes_on_from_where_it_stopped(online, hub, tmp_path):
    hub.faults.drop_after[f"{REPO}/{UNET16}"] = 100_000
    done = install_repo(REPO, library(tmp_path))
    first, again = [r for repo, path, r in hub.served if path == UNET16]
    assert first == "" and again.startswith("bytes=")
    assert 0 < int(again[6:-1]) <= 100_000                  # from what had arrived, not from the start
    blob = (done.folder / UNET16).resolve()
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_a_partial_file_left_by_a_crash_is_resumed_by_the_next_download(online, hub, tmp_path):
    class Crash(Exception):
        pass

    def crash_in_the_unet(step):
        if step.file == UNET16:             # reported after its first bytes are written
            raise Crash()
    plan = plan_download(REPO)
    with pytest.raises(Crash):
        HubDownload(plan, progress=crash_in_the_unet).run()
    partials = list(online.rglob("*.incomplete"))
    assert len(partials) == 1 and partials[0].stat().st_size > 0
    kept = partials[0].stat().st_size
    hub.served.clear()
    HubDownload(plan).run()
    assert [r for _repo, path, r in hub.served if path == UNET16] == [f"bytes={kept}-"]
    assert not list(online.rglob("*.incomplete"))


@pytest.mark.parametrize("fault, why", [("wrong_bytes", "its sha256 is not the one the Hub's metadata gives"),
                                        ("short", "bytes arrived, the Hub's metadata gives")])
def test_a_file_of_the_wrong_hash_or_size_is_refused_and_removed(online, hub, tmp_path, fault, why):
    getattr(hub.faults, fault).add(f"{REPO}/{UNET16}")
    models = library(tmp_path)
    with pytest.raises(DownloadError) as caught:
        install_repo(REPO, models)
    message = str(caught.value)
    assert message.startswith(f"{REPO}/{UNET16} is damaged (") and why in message
    assert message.endswith("the partial file is removed, try again")
    assert not list(online.rglob("*.incomplete"))
    assert models.entries() == []
    assert not is_installed(_entry(REPO))


def _entry(repo):
    from dataclasses import replace

    return replace(find_recommended("sd15-inpainting"), repo=repo)


def test_a_gated_repo_says_how_to_log_in(online, hub, tmp_path):
    with pytest.raises(DownloadError) as caught:
        install_repo(GATED, library(tmp_path))
    assert str(caught.value) == gated_line(GATED)
    assert "hf auth login" in str(caught.value) and "\n" not in str(caught.value)


def test_an_unknown_repo_is_one_line(online, tmp_path):
    with pytest.raises(DownloadError) as caught:
        install_repo("stand-in/not-there", library(tmp_path))
    assert str(caught.value).startswith("no model stand-in/not-there on the Hugging Face hub")


def test_a_full_disk_is_caught_before_the_download_starts(online, hub, tmp_path, monkeypatch):
    monkeypatch.setattr(hub_download, "free_bytes", lambda path: 1_000_000)
    with pytest.raises(DownloadError) as caught:
        install_repo(REPO, library(tmp_path))
    assert str(caught.value).startswith(f"not enough disk space for {REPO}: it needs ")
    assert "1.0 MB free" in str(caught.value)
    assert hub.served == []


def test_cancel_leaves_no_partial_model_behind(online, hub, tmp_path):
    control = DownloadControl()
    models = library(tmp_path)

    def cancel_in_the_unet(step):
        if step.file == UNET16:
            control.cancel()
    with pytest.raises(DownloadCancelled):
        install_repo(REPO, models, cancel_in_the_unet, control)
    assert models.entries() == []
    assert not (online / "models--stand-in--tiny-inpainting").exists()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download(REPO, local_files_only=True)


def test_the_job_pauses_resumes_and_reports_bytes_speed_and_eta(online, hub, tmp_path, qtbot):
    job = DownloadJob([REPO], library(tmp_path))
    steps, outcome = [], []
    job.progressed.connect(steps.append)
    job.finished.connect(lambda status, line: outcome.append((status, line)))

    def pause_once(step):
        if step.file == UNET16 and not job.control.paused and not getattr(job, "_paused_once", False):
            job._paused_once = True
            job.pause()
    job.progressed.connect(pause_once)
    job.start()
    qtbot.waitUntil(lambda: job.control.paused and any(s.paused for s in steps), timeout=20000)
    sent = hub.bytes_sent
    qtbot.wait(300)
    assert hub.bytes_sent == sent and outcome == []                 # paused: nothing more arrives
    job.resume()
    qtbot.waitUntil(lambda: bool(outcome), timeout=30000)
    assert outcome == [("done", f"Downloaded {REPO}.")]
    assert steps[-1].done == steps[-1].total == job.installed[0].plan.total_bytes
    assert [r for _repo, path, r in hub.served if path == UNET16][-1].startswith("bytes=")
    assert any(s.speed > 0 and s.eta is not None for s in steps)


@pytest.mark.parametrize("speed, paused, pace", [
    (0.0, False, ""),                                   # nothing measured yet: no "0 bytes/s"
    (2_000_000.0, False, " · 2.0 MB/s · 3 s left"),
    (2_000_000.0, True, ""),
])
def test_the_pace_is_said_only_once_it_is_measured(speed, paused, pace):
    from app.engine.hub_download import DownloadProgress

    assert DownloadProgress("a/b", 1_000_000, 7_000_000, speed, "unet", paused).pace == pace


# -- the curated list -----------------------------------------------------------------------------------

def test_the_recommended_list_reads_and_fits_the_machine():
    models = read_recommended()
    assert find_recommended("sd15-inpainting", models).repo == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    cpu = [m.name for m in recommend(Machine("", 0, 100 << 30, "/cache"), models)]
    small_gpu = [m.name for m in recommend(Machine("RTX 3060", 6, 100 << 30, "/cache"), models)]
    big_gpu = [m.name for m in recommend(Machine("H100", 80, 100 << 30, "/cache"), models)]
    assert cpu == ["sd15-inpainting", "taesd"]
    assert "sdxl-inpainting" not in small_gpu and "controlnet-canny-sd15" in small_gpu
    assert "sdxl-inpainting" in big_gpu and "taesdxl" in big_gpu
    assert all(m.download_bytes > 0 and m.licence and m.good_for for m in models)


def test_looking_at_the_machine_waits_for_a_preload_under_way(monkeypatch, tmp_path):
    """Models ▸ Get Models… while the engine is still being imported: torch is not imported on two threads."""
    import threading

    from app.editor.recommended_models import look_at_machine
    from app.engine import preload

    monkeypatch.setattr(preload, "_thread", threading.current_thread())        # a preload under way
    monkeypatch.setattr(preload, "_done", threading.Event())
    seen = []
    looker = threading.Thread(target=lambda: seen.append(look_at_machine(tmp_path)))
    looker.start()
    looker.join(0.5)
    assert seen == []
    preload._done.set()
    looker.join(10)
    assert len(seen) == 1 and seen[0].free_disk_bytes > 0


def test_the_machine_line_writes_the_home_folder_as_a_tilde(monkeypatch, tmp_path):
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "ana")
    cache = tmp_path / "ana" / ".cache" / "huggingface" / "hub"
    line = Machine("", 0, 57_500_000_000, str(cache)).describe()
    assert line.endswith(f"57.5 GB free for models in {Path('~', '.cache', 'huggingface', 'hub')}")
    assert Machine("", 0, 1, "/srv/models").describe().endswith("in /srv/models")


def test_a_damaged_recommended_list_is_one_line(tmp_path):
    bad = tmp_path / "recommended_models.json"
    bad.write_text('{"models": [{"name": "x"}]}')
    with pytest.raises(EngineError) as caught:
        read_recommended(bad)
    assert str(caught.value).startswith("the recommended models list recommended_models.json is damaged")


# -- the command line -------------------------------------------------------------------------------------

def cli(hub, tmp_path, *args):
    import os
    import subprocess
    import sys

    env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HUB_CACHE=str(tmp_path / "cli-cache"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_TOKEN", None)
    main = Path(__file__).resolve().parent.parent / "main.py"
    return subprocess.run([sys.executable, str(main), *args], capture_output=True, text=True, env=env, timeout=120)


def test_models_download_list_and_remove_from_the_command_line(hub, tmp_path):
    got = cli(hub, tmp_path, "models", "download", "sd15-inpainting")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == f"added {SD15} to the model list: use it with --model {SD15}"
    assert f"downloading {SD15}: 12 files," in got.stderr and "(fp16 weights)" in got.stderr
    assert "100.0% · " in got.stderr
    listed = cli(hub, tmp_path, "models", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if SD15 in x)
    assert line.startswith(f"  Stable Diffusion 1.5 Inpainting: {SD15}  (")       # the name, what --model takes
    assert "inpainting" in line and "SD 1.x" in line and "Hugging Face cache" in line
    assert "sd15-inpainting" not in listed.stdout.split("Recommended")[-1]
    assert "taesd" in listed.stdout.split("Recommended")[-1]
    removed = cli(hub, tmp_path, "models", "remove", "sd15-inpainting", "--delete")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith("removed Stable Diffusion 1.5 Inpainting and deleted ")
    assert removed.stdout.rstrip().endswith("MB from the Hugging Face cache")
    assert not (tmp_path / "cli-cache" / "models--stable-diffusion-v1-5--stable-diffusion-inpainting").exists()
    again = cli(hub, tmp_path, "models", "list")
    assert SD15 not in again.stdout.split("Recommended")[0]


@pytest.mark.parametrize("name, status, line", [
    ("no such thing", 2, "latent-canvas: error: 'no such thing' is neither a recommended model"),
    (GATED, 1, f"latent-canvas: error: {gated_line(GATED)}"),
])
def test_models_download_errors_are_one_line(hub, tmp_path, name, status, line):
    got = cli(hub, tmp_path, "models", "download", name)
    assert got.returncode == status
    assert got.stderr.strip().splitlines()[-1].startswith(line)
