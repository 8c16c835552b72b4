"""The ComfyUI engine against a real ComfyUI server (random-weight SD 1.5 checkpoints: plumbing, geometry and
protocol, not image quality). Crops run at 256² so a job takes seconds on a CPU server."""
from __future__ import annotations

import re
import threading
import time

import httpx
import numpy as np
import pytest

from app.core import imageops
from app.core.geometry import Rect
from app.engine.comfy import engine as comfy_engine
from app.engine.events import CancelToken, EventKind
from app.engine.registry import EngineRegistry
from app.engine.request import (GenerationRequest, JobKind, MaskOptions, OutpaintOptions, SamplingOptions,
                                ServerInput)
from app.engine.runner import run_job

INPAINT = "sd15_random_inpaint.safetensors"
BASE = "sd15_random_base.safetensors"


@pytest.fixture(autouse=True)
def _small_crops(monkeypatch):
    monkeypatch.setattr(comfy_engine, "NATIVE_SIDE", 256)


def _photo(height=160, width=200):
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([(x * 255 // width), (y * 255 // height), ((x + y) % 64) * 4]).astype(np.uint8)


def _fill(url, checkpoint=INPAINT, steps=3, variants=1, seed=11, servers=()):
    image = _photo()
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[50:110, 60:140] = 255
    return GenerationRequest(JobKind.FILL, image, mask, prompt="a stone", model=f"{checkpoint}@{url}",
                             sampling=SamplingOptions(steps=steps, seed=seed, variants=variants),
                             mask_options=MaskOptions(feather=6), servers=tuple(servers))


def _run(request, cancel=None, on_event=None):
    events = []

    def emit(event):
        events.append(event)
        if on_event is not None:
            on_event(event)

    run_job(EngineRegistry().create(request.model), request, 1, emit, cancel or CancelToken())
    return events[-1], events


def _far(request):
    return imageops.feather_mask(request.mask, request.mask_options.feather) == 0


@pytest.mark.parametrize("checkpoint", [INPAINT, BASE])
def test_a_fill_previews_every_step_and_keeps_every_pixel_beyond_the_feather(comfy_url, checkpoint):
    request = _fill(comfy_url, checkpoint)
    result, events = _run(request)
    assert result.kind == EventKind.RESULT, result.message
    previews = [event for event in events if event.kind == EventKind.PROGRESS and event.preview is not None]
    assert len(previews) == 3 and previews[0].preview.shape[2] == 4
    assert all(event.preview_rect.intersect(Rect(60, 50, 80, 60)) == Rect(60, 50, 80, 60) for event in previews)
    [variant] = result.variants
    far = _far(request)
    np.testing.assert_array_equal(variant.image[far], request.image[far])
    assert not np.array_equal(variant.image[request.mask > 0], request.image[request.mask > 0])
    assert f"{checkpoint} @ 127.0.0.1:" in variant.parameters and "Seed: 11" in variant.parameters


def test_an_expand_keeps_the_image_and_fills_the_new_area(comfy_url):
    image = _photo()
    canvas = Rect(0, 0, 264, 160)
    request = GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(canvas), prompt="more",
                                model=f"{INPAINT}@{comfy_url}", sampling=SamplingOptions(steps=2, seed=3))
    result, _ = _run(request)
    assert result.kind == EventKind.RESULT, result.message
    out = result.variants[0].image
    assert out.shape == (160, 264, 3)
    np.testing.assert_array_equal(out[:, :200 - 2 * request.mask_options.feather],
                                  image[:, :200 - 2 * request.mask_options.feather])


def test_a_checkpoint_the_server_lacks_is_one_line(comfy_url):
    result, _ = _run(_fill(comfy_url, "nope.safetensors"))
    assert result.kind == EventKind.ERROR
    assert "has no checkpoint nope.safetensors (it has: sd15_random_base.safetensors" in result.message
    assert "\n" not in result.message


def _queue(url):
    return httpx.get(f"{url}/queue", timeout=10).json()


def test_cancel_while_running_stops_the_server_job(comfy_url):
    cancel = CancelToken()

    def on_event(event):
        if event.kind == EventKind.PROGRESS and event.step >= 1:
            cancel.cancel()

    result, _ = _run(_fill(comfy_url, steps=12, seed=21), cancel, on_event)
    assert result.kind == EventKind.CANCELLED
    deadline = time.monotonic() + 30
    while _queue(comfy_url)["queue_running"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _queue(comfy_url)["queue_running"]


def test_cancel_while_pending_takes_the_job_off_the_queue(comfy_url):
    from app.engine.comfy.client import ComfyClient, Server

    blocker = ComfyClient(Server.parse(comfy_url))
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": BASE}},
             "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
             "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["1", 1]}},
             "4": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 5, "steps": 40, "cfg": 7,
                                                        "sampler_name": "euler", "scheduler": "normal",
                                                        "positive": ["3", 0], "negative": ["3", 0],
                                                        "latent_image": ["2", 0], "denoise": 1}},
             "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
             "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}}
    blocking = blocker.queue_prompt(graph)
    cancel = CancelToken()
    try:
        outcome = {}
        worker = threading.Thread(target=lambda: outcome.update(result=_run(_fill(comfy_url, seed=31), cancel)[0]))
        worker.start()
        deadline = time.monotonic() + 60
        while not _queue(comfy_url)["queue_pending"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _queue(comfy_url)["queue_pending"], "our job never waited in the queue"
        cancel.cancel()
        worker.join(30)
        assert outcome["result"].kind == EventKind.CANCELLED
        assert not _queue(comfy_url)["queue_pending"]
        assert [entry[1] for entry in _queue(comfy_url)["queue_running"]] == [blocking]
    finally:
        blocker.cancel(blocking)
        blocker.close()


def test_two_servers_share_the_variants_and_a_killed_one_is_retried_on_the_other(comfy_url, second_server):
    request = _fill(second_server.url, steps=3, variants=2, seed=41,
                    servers=[ServerInput(second_server.url), ServerInput(comfy_url)])
    killed = threading.Event()

    def on_event(event):
        if event.kind == EventKind.PROGRESS and f":{second_server.port}" in event.message \
                and event.message.startswith("step") and not killed.is_set():
            killed.set()
            threading.Thread(target=second_server.stop).start()

    result, events = _run(request, on_event=on_event)
    assert killed.is_set()
    assert result.kind == EventKind.RESULT, result.message
    assert sorted(variant.seed for variant in result.variants) == [41, 42]
    assert any(event.notice and "runs again on another server" in event.message for event in events)
    survivor = comfy_url.split("//")[1]
    assert any(re.fullmatch(rf"step \d/6 · .*{re.escape(survivor)} variant [12] \d/3.*", event.message)
               for event in events)                                 # the queue view: who runs what
    far = _far(request)
    for variant in result.variants:
        np.testing.assert_array_equal(variant.image[far], request.image[far])
        assert f"@ {comfy_url.split('//')[1]}" in variant.parameters      # both ran on the survivor


def test_the_command_line_fills_on_a_server(comfy_url, tmp_path):
    from PIL import Image

    from tests.test_cli import run

    image = _photo()
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[40:100, 50:120] = 255
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    result = run("fill", tmp_path / "in.png", "--mask", tmp_path / "mask.png", "-o", out, "--model", INPAINT,
                 "--server", comfy_url, "--steps", "2", "--seed", "8", "--feather", "4")
    assert result.returncode == 0, result.stderr
    filled = np.asarray(Image.open(out))
    far = imageops.feather_mask(mask, 4) == 0
    np.testing.assert_array_equal(filled[far], image[far])
    assert "step 2/2" in result.stderr
    missing = run("fill", tmp_path / "in.png", "--mask", tmp_path / "mask.png", "-o", tmp_path / "no.png",
                  "--model", "absent.safetensors", "--server", comfy_url)
    assert missing.returncode == 1 and "has no checkpoint absent.safetensors" in missing.stderr
