"""The ComfyUI backend without a ComfyUI server: server addresses, "NAME@SERVER" model ids, the API graphs
built from requests, and a stand-in HTTP server on 127.0.0.1 answering as a broken or hostile server would
(oversized, corrupt or mis-sized images, no JSON, refusals, wrong tokens), each refused in one line."""
from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from app.engine.comfy import client as comfy_client
from app.engine.comfy.client import ComfyClient, Server, ServerError, ServerGone, decode_preview
from app.engine.comfy.engine import _server_file, servers_for
from app.engine.comfy.workflow import OUTPUT_NODE, PassInputs, build_graph, result_images
from app.engine.model_ids import server_model
from app.engine.request import (ControlInput, GenerationRequest, JobKind, SamplingOptions, ServerInput,
                                StyleOptions)


@pytest.mark.parametrize("text, url, name", [
    ("127.0.0.1:8188", "http://127.0.0.1:8188", "127.0.0.1:8188"),
    ("http://localhost:8188/", "http://localhost:8188", "localhost:8188"),
    ("https://gpu.example.com/comfy/", "https://gpu.example.com/comfy", "gpu.example.com:443/comfy"),
    ("[::1]:8188", "http://[::1]:8188", "::1:8188"),
])
def test_server_addresses_as_typed(text, url, name):
    server = Server.parse(text)
    assert (server.url, server.name) == (url, name)


@pytest.mark.parametrize("text, message", [
    ("", "no server address"),
    ("ftp://host:21", "no server address"),
    ("http://user:secret@host:8188", "without user"),
    ("http://host:8188/?x=1", "without user, query"),
    ("host:99999", "port is no number"),
])
def test_unusable_server_addresses_are_one_line(text, message):
    with pytest.raises(ServerError, match=message) as caught:
        Server.parse(text)
    assert "\n" not in str(caught.value)


def test_tokens_go_in_the_authorization_header_and_nowhere_else():
    assert Server.parse("h:1", "abc").headers == {"Authorization": "Bearer abc"}
    assert Server.parse("h:1", "Basic dXNlcg==").headers == {"Authorization": "Basic dXNlcg=="}
    assert Server.parse("h:1").headers == {}
    assert "abc" not in repr(ServerInput("http://h:1", "abc"))


@pytest.mark.parametrize("text, expected", [
    ("sd15.safetensors@127.0.0.1:8188", ("sd15.safetensors", "127.0.0.1:8188")),
    ("sub/dir/x.ckpt@http://gpu:8188", ("sub/dir/x.ckpt", "http://gpu:8188")),
    ("model@localhost", ("model", "localhost")),
    ("name@https://rented.example/comfy", ("name", "https://rented.example/comfy")),
    ("someone@example", None),            # no port, no scheme: not a server
    ("owner/repo", None),
    ("@127.0.0.1:8188", None),
    ("classic", None),
])
def test_server_model_ids(text, expected):
    assert server_model(text) == expected


def test_a_local_path_with_an_at_sign_is_a_path(tmp_path):
    weights = tmp_path / "model@2x:1.safetensors"
    weights.write_bytes(b"x")
    assert server_model(str(weights)) is None


def test_the_models_server_comes_first_with_its_token_and_each_server_once():
    request = _request(servers=(ServerInput("http://b:2"), ServerInput("127.0.0.1:1", "t"), ServerInput("b:2")))
    servers = servers_for("127.0.0.1:1", request)
    assert [(server.url, server.token) for server in servers] == [("http://127.0.0.1:1", "t"), ("http://b:2", "")]


def test_local_files_are_found_on_the_server_by_file_name():
    available = ["sdxl/canny.safetensors", "style\\ink.safetensors", "other.safetensors"]
    assert _server_file(available, "/home/me/loras/INK.safetensors") == "style\\ink.safetensors"
    assert _server_file(available, "C:\\nets\\canny.safetensors") == "sdxl/canny.safetensors"
    assert _server_file(available, "/x/missing.safetensors") == ""


# ---------------------------------------------------------------------------------------------- graphs

def _request(kind=JobKind.FILL, **changes):
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 10:20] = 255
    values = dict(prompt="a boat", negative_prompt="blur", sampling=SamplingOptions(steps=9, guidance=5.5, seed=3,
                                                                                    sampler="euler_a"))
    if kind == JobKind.FILL:
        values["mask"] = mask
    values.update(changes)
    return GenerationRequest(kind, image, **values)


def _classes(graph):
    return sorted(node["class_type"] for node in graph.values())


def test_an_inpainting_checkpoint_gets_inpaint_conditioning_and_a_base_one_a_noise_mask():
    inpaint = build_graph(_request(), PassInputs("crop.png", 7, "in.safetensors", True))
    base = build_graph(_request(), PassInputs("crop.png", 7, "base.safetensors", False))
    assert "InpaintModelConditioning" in _classes(inpaint) and "SetLatentNoiseMask" not in _classes(inpaint)
    assert "SetLatentNoiseMask" in _classes(base) and "InpaintModelConditioning" not in _classes(base)
    sampler = inpaint["sampler"]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"],
            sampler["denoise"]) == (7, 9, 5.5, "euler_ancestral", "normal", 1.0)
    assert sampler["latent_image"] == ["inpaint", 2] and inpaint["inpaint"]["inputs"]["mask"] == ["image", 1]
    assert inpaint["image"]["inputs"]["image"] == "crop.png"
    assert inpaint[OUTPUT_NODE]["class_type"] == "PreviewImage"
    assert json.loads(json.dumps(inpaint)) == inpaint                       # plain JSON, as /prompt takes it


def test_a_restyle_encodes_the_whole_image_and_denoises_by_its_strength():
    request = _request(JobKind.RESTYLE, sampling=SamplingOptions(steps=10, strength=0.6))
    graph = build_graph(request, PassInputs("whole.png", 1, "m.safetensors", False))
    assert "SetLatentNoiseMask" not in _classes(graph) and graph["sampler"]["inputs"]["denoise"] == 0.6
    assert graph["sampler"]["inputs"]["latent_image"] == ["encode", 0]


def test_a_style_below_full_strength_blends_prompts_and_scales_its_lora():
    style = StyleOptions("Ink", 0.5, base_prompt="a boat", base_negative_prompt="", lora="/l/ink.safetensors",
                         lora_weight=0.8)
    graph = build_graph(_request(prompt="a boat, ink drawing", style=style),
                        PassInputs("c.png", 1, "m.safetensors", True, lora="ink.safetensors"))
    assert graph["lora"]["inputs"]["strength_model"] == graph["lora"]["inputs"]["strength_clip"] == 0.4
    assert graph["positive_blend"]["inputs"]["conditioning_to_strength"] == 0.5
    assert graph["positive_plain"]["inputs"]["text"] == "a boat"
    assert graph["positive"]["inputs"]["clip"] == ["lora", 1] and graph["sampler"]["inputs"]["model"] == ["lora", 0]
    plain = build_graph(_request(), PassInputs("c.png", 1, "m.safetensors", True))
    assert "LoraLoader" not in _classes(plain) and "ConditioningAverage" not in _classes(plain)


def test_controlnets_chain_their_conditioning_with_weight_and_range():
    controls = (ControlInput("canny", "/n/canny.safetensors", weight=0.7, start=0.1, end=0.8),
                ControlInput("tile", "/n/tile.safetensors"))
    graph = build_graph(_request(controls=controls),
                        PassInputs("c.png", 1, "m.safetensors", False,
                                   controls=(("canny.safetensors", "e.png"), ("tile.safetensors", "t.png"))))
    first, second = graph["control0"]["inputs"], graph["control1"]["inputs"]
    assert (first["strength"], first["start_percent"], first["end_percent"]) == (0.7, 0.1, 0.8)
    assert second["positive"] == ["control0", 0] and second["negative"] == ["control0", 1]
    assert graph["sampler"]["inputs"]["positive"] == ["control1", 0]
    assert graph["control0_net"]["inputs"]["control_net_name"] == "canny.safetensors"
    assert graph["control1_image"]["inputs"]["image"] == "t.png"


def test_result_images_are_read_only_from_a_well_formed_record():
    assert result_images({OUTPUT_NODE: {"images": [{"filename": "a.png"}, "junk"]}}) == [{"filename": "a.png"}]
    assert result_images({OUTPUT_NODE: "junk"}) == [] and result_images({}) == []


# ------------------------------------------------------------------------------ a hostile stand-in server

def _png(width, height, mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class _StandIn(BaseHTTPRequestHandler):
    routes: dict = {}

    def _answer(self):
        status, body, kind = self.routes.get(self.path.split("?")[0], (404, b"not here", "text/plain"))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's name
        self._answer()

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    _StandIn.routes = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = ComfyClient(Server.parse(f"127.0.0.1:{server.server_address[1]}"))
    yield _StandIn.routes, client
    client.close()
    server.shutdown()


def _json(value, status=200):
    return status, json.dumps(value).encode(), "application/json"


def test_results_of_the_wrong_size_or_no_image_are_refused(stand_in):
    routes, client = stand_in
    ref = {"filename": "r.png", "subfolder": "", "type": "temp"}
    routes["/view"] = (200, _png(64, 48), "image/png")
    assert client.fetch_image(ref, (64, 48)).shape == (48, 64, 3)
    with pytest.raises(ServerError, match=r"sent a 64x48 result for a 512x512 pass: refused"):
        client.fetch_image(ref, (512, 512))
    routes["/view"] = (200, b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "image/png")
    with pytest.raises(ServerError, match="no image"):
        client.fetch_image(ref, (64, 48))
    with pytest.raises(ServerError, match="named its result oddly"):
        client.fetch_image({"filename": ["../../etc/passwd"]}, (64, 48))


def test_an_answer_over_the_limit_is_refused_while_it_arrives(stand_in, monkeypatch):
    routes, client = stand_in
    routes["/view"] = (200, _png(300, 300) + b"\0" * 200_000, "image/png")
    monkeypatch.setattr(comfy_client, "MAX_IMAGE_BYTES", 100_000)
    with pytest.raises(ServerError, match="sent more than"):
        client.fetch_image({"filename": "r.png", "subfolder": "", "type": "temp"}, (300, 300))


def test_a_server_that_is_no_comfyui_or_refuses_says_so_in_one_line(stand_in):
    routes, client = stand_in
    routes["/system_stats"] = (200, b"<html>hello</html>", "text/html")
    with pytest.raises(ServerError, match="sent no JSON for /system_stats: is it a ComfyUI server"):
        client.system_stats()
    routes["/system_stats"] = _json({"devices": []})
    with pytest.raises(ServerError, match="is no ComfyUI server"):
        client.system_stats()
    routes["/system_stats"] = (401, b"", "text/plain")
    with pytest.raises(ServerError, match="refused the request .HTTP 401.: check its token"):
        client.system_stats()
    routes["/prompt"] = _json({"error": {"type": "prompt_outputs_failed_validation", "message": "failed"},
                               "node_errors": {"checkpoint": {"errors": [{
                                   "type": "value_not_in_list", "message": "Value not in list",
                                   "details": "ckpt_name: 'x.safetensors' not in ['a.safetensors']"}]}}}, 400)
    with pytest.raises(ServerError, match="cannot run it: it has no ckpt_name: 'x.safetensors' not in") as caught:
        client.queue_prompt({})
    assert "\n" not in str(caught.value)
    routes["/prompt"] = _json({"number": 3})
    with pytest.raises(ServerError, match="queued nothing"):
        client.queue_prompt({})


def test_lists_of_models_tolerate_odd_object_info(stand_in):
    routes, client = stand_in
    routes["/object_info/CheckpointLoaderSimple"] = _json({"CheckpointLoaderSimple": {"input": {"required": {
        "ckpt_name": [["a.safetensors", 3, None, "b.ckpt"], {}]}}}})
    routes["/object_info/LoraLoader"] = _json({"LoraLoader": {"input": {"required": {
        "lora_name": ["COMBO", {"options": ["ink.safetensors"]}]}}}})
    routes["/object_info/ControlNetLoader"] = _json({"ControlNetLoader": "junk"})
    assert client.checkpoints() == ["a.safetensors", "b.ckpt"]
    assert client.loras() == ["ink.safetensors"]
    assert client.controlnets() == []


def test_a_server_that_is_not_there_is_gone():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ComfyClient(Server.parse(f"127.0.0.1:{port}"))
    with pytest.raises(ServerGone, match=f"cannot reach the ComfyUI server at http://127.0.0.1:{port}"):
        client.system_stats()
    client.close()


def test_previews_are_decoded_only_when_small_jpeg_or_png():
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24)).save(buffer, format="JPEG")
    assert decode_preview(buffer.getvalue()).shape == (24, 32, 3)
    assert decode_preview(_png(3000, 10)) is None
    assert decode_preview(b"garbage") is None


def test_a_server_checkpoint_is_added_to_the_library_once_the_server_lists_it(stand_in, tmp_path):
    from app.editor.model_library import ModelLibrary
    from app.engine.events import EngineError

    routes, client = stand_in
    routes["/system_stats"] = _json({"system": {"comfyui_version": "0.3.64"}})
    routes["/object_info/CheckpointLoaderSimple"] = _json({"CheckpointLoaderSimple": {"input": {"required": {
        "ckpt_name": [["sd15.safetensors"], {}]}}}})
    address = client.server.url.split("//")[1]
    library = ModelLibrary(tmp_path / "models.json")
    entry = library.add(f"sd15.safetensors@{address}")
    assert (entry.kind, entry.label, entry.location) == ("server", f"sd15.safetensors @ {address}",
                                                         f"sd15.safetensors@http://{address}")
    assert [e.location for e in ModelLibrary(tmp_path / "models.json").entries()] == [entry.location]
    with pytest.raises(EngineError, match=r"has no checkpoint other.safetensors \(it has: sd15.safetensors\)"):
        library.add(f"other.safetensors@{address}")


def test_the_command_line_prints_notices_mid_job(capsys):
    from app.cli import _ProgressPrinter
    from app.engine.events import EngineEvent

    printer = _ProgressPrinter()
    for event in (EngineEvent.progress(1, 0, 6, message="connecting to a:1, b:2"),
                  EngineEvent.progress(1, 1, 6, message="step 1/6 on b:2"),
                  EngineEvent.progress(1, 1, 6, message="b:2 dropped the connection during the job: its variant "
                                                        "runs again on another server", notice=True),
                  EngineEvent.progress(1, 2, 6, message="coarse fill")):
        printer(event)
    assert capsys.readouterr().err.splitlines() == [
        "connecting to a:1, b:2", "step 1/6",
        "note: b:2 dropped the connection during the job: its variant runs again on another server", "step 2/6"]


def test_a_server_lacking_a_node_a_lora_or_a_controlnet_is_one_line_each(stand_in):
    from app.engine.comfy.engine import ComfyEngine
    from app.engine.comfy.workflow import NEEDED_NODES

    routes, client = stand_in
    for node in NEEDED_NODES:
        routes[f"/object_info/{node}"] = _json({node: {"input": {"required": {}}}})
    routes["/object_info/CheckpointLoaderSimple"] = _json({"CheckpointLoaderSimple": {"input": {"required": {
        "ckpt_name": [["sd15-inpainting.safetensors"], {}]}}}})
    routes["/object_info/LoraLoader"] = _json({"LoraLoader": {"input": {"required": {"lora_name": [["ink.safetensors"]]}}}})
    routes["/object_info/ControlNetLoader"] = _json({"ControlNetLoader": {"input": {"required": {
        "control_net_name": [["canny.safetensors"]]}}}})
    engine = ComfyEngine(f"sd15-inpainting.safetensors@{client.server.url}")
    ink = StyleOptions("Ink", lora="/loras/ink.safetensors")
    inputs = engine._inputs(client, _request(style=ink, controls=(ControlInput("canny", "/n/canny.safetensors"),)))
    assert (inputs.lora, inputs.controls, inputs.inpaint_model) == ("ink.safetensors", (("canny.safetensors", ""),),
                                                                    True)

    def refused(request, message):
        with pytest.raises(ServerError, match=message) as caught:
            engine._inputs(client, request)
        assert "\n" not in str(caught.value)

    refused(_request(style=StyleOptions("Oil", lora="/loras/oil.safetensors")),
            r"has no LoRA oil.safetensors \(the style Oil\): copy it into its models/loras")
    refused(_request(controls=(ControlInput("depth", "/n/depth.safetensors"),)),
            "has no ControlNet depth.safetensors: copy the file into its models/controlnet")
    routes["/object_info/KSampler"] = _json({})
    refused(_request(), "lacks the node KSampler: update ComfyUI there")
    with pytest.raises(ServerError, match=r"has no checkpoint other.safetensors \(it has: sd15-inpainting"):
        ComfyEngine(f"other.safetensors@{client.server.url}")._inputs(client, _request())
