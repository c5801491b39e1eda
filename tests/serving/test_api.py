"""The inference service: predictions for PNG / JPEG / DICOM uploads and text, and every bad-input case."""

from __future__ import annotations

import asyncio
import io
import logging
import struct
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medmodal.serving.app import create_app
from medmodal.serving.security import (
    ServingLimits,
    allowed_hosts,
    is_loopback,
    redact_paths,
    require_api_key_for,
    validate_api_key,
)

from .conftest import LiveServer, local_client

KEY = "k3y-for-tests-0123456789"


@pytest.fixture(scope="module")
def client(tiny_run, predictor):
    with local_client(create_app(tiny_run, predictor=predictor)) as c:
        yield c


def png_bytes(size=(40, 30), mode="L") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(size[1], size[0]), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((24, 32), 128, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def dicom_bytes(drop_pixels: bool = False) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if drop_pixels:
        del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` (CRC fixed): a decompression-bomb stand-in."""
    data = bytearray(png_bytes((4, 4)))
    ihdr = 8  # signature, then length(4) type(4) data(13) crc(4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13])) & 0xFFFFFFFF
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def predict(client, content: bytes | None = None, content_type="image/png", name="x.png", **text):
    files = {"image": (name, content, content_type)} if content is not None else None
    return client.post("/v1/predict", files=files, data=text or None)


# ------------------------------------------------------------------ happy paths
def test_health_and_model_describe_the_run(client, predictor):
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["labels"] == len(predictor.labels)
    info = client.get("/v1/model").json()
    assert info["labels"] == predictor.labels
    assert info["config"]["data"]["image_size"] == 64
    assert info["training_data"]["rows_kept"] == 80
    assert "file" not in info["training_data"]  # no server paths
    assert info["metrics"] is None  # not evaluated


def test_openapi_schema_lists_the_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/health", "/v1/model"} <= set(paths)
    form = paths["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form  # the multipart form is documented


def test_png_and_text_prediction_matches_the_predictor(client, predictor, tmp_path):
    content = png_bytes()
    response = predict(client, content, text="cough and fever")
    assert response.status_code == 200, response.text
    body = response.json()
    (tmp_path / "a.png").write_bytes(content)
    expected = predictor.predict(tmp_path / "a.png", "cough and fever")
    assert body["labels"] == pytest.approx(expected["labels"], abs=1e-6)
    assert body["modalities"] == {"image": True, "text": True}
    assert isinstance(body["report"], str)
    for box in body.get("boxes", []):  # boxes are in pixels of the uploaded 40 x 30 image
        x0, y0, x1, y1 = box["box"]
        assert 0 <= x0 <= x1 <= 40 and 0 <= y0 <= y1 <= 30


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/octet-stream", None])
def test_jpeg_upload(client, content_type):
    response = predict(client, jpeg_bytes(), content_type=content_type or "", name="x.jpg")
    assert response.status_code == 200, response.text
    assert response.json()["modalities"]["image"] is True


def test_dicom_upload_uses_pixel_data(client):
    response = predict(client, dicom_bytes(), content_type="application/dicom", name="x.dcm")
    assert response.status_code == 200, response.text
    assert response.json()["modalities"] == {"image": True, "text": False}


def test_text_only_and_section_fields(client):
    free = predict(client, text="short of breath")
    sections = predict(client, indication="short of breath")
    assert free.status_code == sections.status_code == 200
    assert free.json()["modalities"] == {"image": False, "text": True}
    assert free.json()["labels"] == sections.json()["labels"]  # plain text is the first input field


# -------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "content, content_type, status, words",
    [
        (png_bytes()[:60], "image/png", 422, "cannot be decoded"),  # truncated PNG
        (png_bytes(), "image/jpeg", 415, "declared as 'image/jpeg'"),  # wrong content type
        (b"hello, this is not an image at all" * 10, "image/png", 415, "not a png"),
        (dicom_bytes(drop_pixels=True), "application/dicom", 422, "no pixel data"),
        (png_with_header_size(100_000, 100_000), "image/png", 413, "pixels"),  # decompression bomb
        (b"", "image/png", 400, "empty"),
    ],
    ids=["truncated-png", "wrong-content-type", "not-an-image", "dicom-without-pixels", "bomb", "empty"],
)
def test_bad_uploads_get_a_clear_4xx(client, content, content_type, status, words):
    response = predict(client, content, content_type=content_type)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"].lower()
    assert client.get("/v1/health").status_code == 200  # the server is still up


def test_ten_megabytes_of_text_is_refused(client):
    # Starlette's multipart parser refuses any form field over 1 MB before the handler runs.
    response = predict(client, text="effusion " * (10 * 1024 * 1024 // 9))
    assert response.status_code == 400, response.text
    assert "exceeded maximum size" in response.json()["detail"]
    assert "effusion" not in response.text


def test_text_over_the_character_limit_is_refused(tiny_run, predictor):
    with local_client(
        create_app(tiny_run, predictor=predictor, limits=ServingLimits(max_text_chars=50))
    ) as c:
        response = predict(c, text="x" * 51)
        assert response.status_code == 413
        assert "'text'" in response.json()["detail"]
        assert "x" * 51 not in response.text  # the content is never echoed


def test_request_body_limit(tiny_run, predictor):
    with local_client(
        create_app(tiny_run, predictor=predictor, limits=ServingLimits(max_request_bytes=2000))
    ) as c:
        response = predict(c, png_bytes((200, 200)))
        assert response.status_code == 413
        assert "larger than 2000 bytes" in response.json()["detail"]


def test_image_pixel_limit_applies_to_real_images(tiny_run, predictor):
    with local_client(
        create_app(tiny_run, predictor=predictor, limits=ServingLimits(max_image_pixels=1000))
    ) as c:
        assert predict(c, png_bytes((40, 30))).status_code == 413
        assert predict(c, png_bytes((20, 20))).status_code == 200


def test_nothing_to_predict_and_mixed_text_fields(client):
    assert predict(client).status_code == 422
    both = predict(client, text="a", indication="b")
    assert both.status_code == 422 and "either" in both.json()["detail"]


# ------------------------------------------------------------------- security
def test_api_key_required_when_configured(tiny_run, predictor):
    with local_client(create_app(tiny_run, predictor=predictor, api_key=KEY)) as c:
        assert c.get("/v1/model").status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": KEY}).status_code == 200
        assert predict(c, text="cough").status_code == 401
        assert c.get("/v1/health").status_code == 200  # liveness stays open


def test_binding_beyond_loopback_needs_a_key():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    require_api_key_for("127.0.0.1", None)
    require_api_key_for("0.0.0.0", "key")
    with pytest.raises(ValueError, match="API key"):
        require_api_key_for("0.0.0.0", None)


def test_report_text_and_uploads_never_reach_the_logs(client, caplog):
    secret = "Patient Zebediah Quux has a left effusion"
    with caplog.at_level(logging.DEBUG):
        assert predict(client, png_bytes(), name="Zebediah_Quux.png", text=secret).status_code == 200
        assert predict(client, b"garbage" * 40, name="Zebediah_Quux.png", text=secret).status_code == 415
    logged = caplog.text
    assert "/v1/predict" in logged  # the service does log requests ...
    assert "Zebediah" not in logged and "effusion" not in logged  # ... but not their content


# ------------------------------------------------------------------- under load
@pytest.mark.slow
def test_32_concurrent_clients_on_a_real_server(tiny_run, predictor):
    import httpx

    content = png_bytes()

    async def one(http: httpx.AsyncClient, i: int) -> int:
        files = {"image": ("x.png", content, "image/png")}
        response = await http.post("/v1/predict", files=files, data={"text": f"cough day {i}"})
        return response.status_code

    async def run_all(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            return await asyncio.gather(*(one(http, i) for i in range(32)))

    with LiveServer(create_app(tiny_run, predictor=predictor)) as server:
        statuses = asyncio.run(run_all(server.url))
    assert statuses == [200] * 32


# ------------------------------------------------------ issue 11: hostile inputs
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"])
def test_loopback_host_headers_are_answered(client, host):
    assert client.get("/v1/health", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "localhost.evil.example"]
)
def test_foreign_host_header_is_refused(client, host):
    # DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 sends its own name as Host.
    response = client.get("/v1/model", headers={"Host": host})
    assert response.status_code == 400
    assert "labels" not in response.text
    assert predict(client, png_bytes(), text="cough").status_code == 200  # the real host still works


def test_configured_host_names_are_answered(tiny_run, predictor):
    hosts = allowed_hosts("0.0.0.0", ["xray.example.org"])
    with local_client(create_app(tiny_run, predictor=predictor, allowed_hosts=hosts, api_key=KEY)) as c:
        assert c.get("/v1/health", headers={"Host": "xray.example.org:8000"}).status_code == 200
        assert c.get("/v1/health", headers={"Host": "other.example.org"}).status_code == 400


def test_allowed_hosts_for_a_bind_address():
    assert allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "::1", "[::1]"]
    assert allowed_hosts("10.1.2.3")[-1] == "10.1.2.3"
    assert "[fd00::5]" in allowed_hosts("fd00::5")
    with pytest.raises(ValueError, match="--allowed-host"):
        allowed_hosts("0.0.0.0")  # a wildcard bind cannot know its own names
    with pytest.raises(ValueError, match="wildcards"):
        allowed_hosts("0.0.0.0", ["*"])


def test_validation_errors_never_echo_the_submitted_values(client):
    name = "Zebediah_Quux_1961-02-03.txt"
    as_file = client.post(
        "/v1/predict", files={"text": (name, b"Zebediah Quux, left effusion", "text/plain")}
    )
    as_text = client.post("/v1/predict", data={"image": "Zebediah_Quux.png"})
    for response in (as_file, as_text):
        assert response.status_code == 422, response.text
        assert "Zebediah" not in response.text and "effusion" not in response.text
        assert response.json()["detail"][0]["loc"][-1] in ("text", "image")  # the field is named


def test_two_images_in_one_upload_are_refused(client):
    files = [("image", ("a.png", png_bytes(), "image/png")), ("image", ("b.png", jpeg_bytes(), "image/jpeg"))]
    response = client.post("/v1/predict", files=files)
    assert response.status_code == 422
    assert "'image' was sent 2 times" in response.json()["detail"]
    twice = client.post("/v1/predict", data={"text": ["cough", "fever"]})
    assert twice.status_code == 422 and "'text'" in twice.json()["detail"]


def test_model_info_shows_no_server_paths(client, tiny_run):
    text = client.get("/v1/model").text
    assert str(tiny_run) not in text and str(tiny_run.parent) not in text

    def strings(value):
        if isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)
        elif isinstance(value, str):
            yield value

    info = client.get("/v1/model").json()
    assert info["training"]["best_checkpoint"] == "best.ckpt"  # was the absolute path
    assert not [s for s in strings(info) if s.startswith("/") or s[1:3] in (":\\", ":/")]


def test_redact_paths():
    value = {
        "a": "/srv/runs/x/best.ckpt",
        "b": ["C:\\runs\\x\\m.ckpt", "~/data/y.csv", "relative/z.csv"],
        "c": 3,
        "d": "plain text",
        "e": "/",
    }
    assert redact_paths(value) == {
        "a": "best.ckpt",
        "b": ["m.ckpt", "y.csv", "relative/z.csv"],
        "c": 3,
        "d": "plain text",
        "e": "/",
    }


@pytest.mark.parametrize(
    "key, words",
    [
        (" " * 40, "too short"),
        ("short-key", "too short"),
        ("a b c d e f g h i j k l m n o", "too short"),
        (" " + "k" * 20, "whitespace"),
        ("k" * 20 + "\n", "whitespace"),
        ("ключ" * 8, "ASCII"),
        ("", "empty"),
    ],
)
def test_weak_api_keys_are_refused_at_start_up(tiny_run, predictor, key, words):
    with pytest.raises(ValueError, match=words):
        validate_api_key(key)
    with pytest.raises(ValueError, match=words):
        create_app(tiny_run, predictor=predictor, api_key=key)
    with pytest.raises(ValueError) as raised:
        validate_api_key(key)
    assert not key.strip() or key.strip() not in str(raised.value)  # the key itself is never printed
