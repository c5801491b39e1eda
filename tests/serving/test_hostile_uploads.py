"""Fuzz-style: hostile uploads against ``POST /v1/predict``.

Every case must get its expected 4xx (or, for a harmless oddity such as a path-like file
name, a normal 200), never a 5xx; nothing may log a traceback; the upload's file name
never comes back; and ``/v1/health`` must still answer quickly afterwards.
"""

from __future__ import annotations

import io
import logging
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
import pytest
from data.hostile_files import gray_dicom
from PIL import Image
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
)

from medmodal.serving.app import create_app
from medmodal.serving.security import ServingLimits

from .conftest import local_client

# Small limits so that the size cases stay small and fast; the real defaults are larger.
LIMITS = ServingLimits(
    max_request_bytes=2 * 1024 * 1024, max_image_pixels=4_000_000, max_image_side=8192, max_text_chars=5000
)
SECRET_NAME = "Zebediah_Quux"


# ------------------------------------------------------------------ file builders
def png(width: int = 40, height: int = 30, mode: str = "L", **save: Any) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, size=(height, width), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def jpeg(width: int = 32, height: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), 128, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int, idat: bytes = b"\0" * 64) -> bytes:
    """A PNG whose IHDR (valid CRC) claims ``width`` x ``height``, with little image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(idat))
            + chunk(b"IEND", b""))  # fmt: skip


def png_bad_crc() -> bytes:
    data = bytearray(png())
    data[29] ^= 0xFF  # the IHDR CRC
    return bytes(data)


def png_with_text_bomb() -> bytes:
    """A valid small PNG carrying a compressed text chunk that inflates to 64 MB."""
    data = png()
    ztxt = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (64 * 1024 * 1024), 9))
    return data[:33] + ztxt + data[33:]  # after the signature and IHDR


def png_idat_bomb() -> bytes:
    """A PNG claiming 1000 x 1000 whose image data inflates far beyond that (Pillow reads what it needs)."""
    return png_claiming(1000, 1000, idat=b"\0" * (40 * 1024 * 1024))


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(jpeg())
    struct.pack_into(">HH", data, data.index(b"\xff\xc0") + 5, height, width)
    return bytes(data)


def dicom(
    rows: int = 16,
    columns: int = 16,
    pixel_bytes: bytes | None = None,
    syntax=ExplicitVRLittleEndian,
    with_pixels: bool = True,
) -> bytes:
    pixels = (pixel_bytes if pixel_bytes is not None else bytes(rows * columns)) if with_pixels else None
    buffer = io.BytesIO()
    gray_dicom(buffer, rows, columns, pixel_data=pixels, syntax=syntax)
    return buffer.getvalue()


def deflated_dicom_bomb() -> bytes:
    """Deflated Explicit VR DICOM: a 2 MB file whose dataset inflates to ~200 MB (header says 16 x 16)."""
    ds = pydicom.dcmread(io.BytesIO(dicom()))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.add_new(0x00091010, "OB", bytes(200 * 1024 * 1024))  # private tag of zeros
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(
    parts: list[tuple[bytes, bytes]], boundary: bytes = b"fuzzboundary"
) -> tuple[bytes, dict[str, str]]:
    """A raw multipart body from (header lines, content) pairs, for bytes no client library would send."""
    body = b"".join(
        b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + content + b"\r\n" for head, content in parts
    )
    body += b"--" + boundary + b"--\r\n"
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}


# --------------------------------------------------------------------- the cases
@dataclass
class Case:
    id: str
    expect: tuple[int, ...]  # acceptable statuses
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, Any] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def image_case(
    case_id: str,
    content: bytes,
    expect: tuple[int, ...],
    content_type: str = "image/png",
    name: str = f"{SECRET_NAME}.png",
) -> Case:
    return Case(case_id, expect, files=[("image", (name, content, content_type))])


def raw_case(case_id: str, parts: list[tuple[bytes, bytes]], expect: tuple[int, ...]) -> Case:
    body, headers = multipart(parts)
    return Case(case_id, expect, content=body, headers=headers)


def chunks(total: int, size: int = 64 * 1024):
    for _ in range(total // size):
        yield b"\0" * size


FILE_HEAD = b'Content-Disposition: form-data; name="image"; filename="x.png"\r\nContent-Type: image/png'
TEXT_HEAD = b'Content-Disposition: form-data; name="text"'

CASES = [
    # truncated and empty files
    image_case("zero-bytes", b"", (400,)),
    image_case("png-signature-only", png()[:8], (422,)),
    image_case("png-truncated-in-ihdr", png()[:20], (422,)),
    image_case("png-truncated-in-idat", png()[:60], (422,)),
    image_case("png-bad-ihdr-crc", png_bad_crc(), (422,)),
    image_case("png-zero-size", png_claiming(0, 0), (422,)),
    image_case("jpeg-soi-only", b"\xff\xd8\xff", (422,), "image/jpeg"),
    image_case("jpeg-truncated", jpeg()[:100], (422,), "image/jpeg"),
    image_case("dicom-marker-only", b"\0" * 128 + b"DICM", (422,), "application/dicom"),
    image_case("dicom-truncated", dicom()[:300], (422,), "application/dicom"),
    # polyglots and formats that are not allowed
    image_case("png-then-html", png()[:40] + b"<html><script>alert(1)</script></html>", (422,)),
    image_case("html-as-png", b"<html><script>alert(1)</script></html>" * 4, (415,)),
    image_case("gif", b"GIF89a" + b"\0" * 200, (415,), "image/gif"),
    image_case("bmp", b"BM" + b"\0" * 200, (415,), "image/bmp"),
    image_case("tiff", b"II*\0" + b"\0" * 200, (415,), "image/tiff"),
    image_case(
        "svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>x</script></svg>', (415,), "image/svg+xml"
    ),
    image_case("zip-as-dicom", b"PK\x03\x04" + b"\0" * 200, (415,), "application/dicom"),
    # content type contradicting the bytes
    image_case("png-declared-jpeg", png(), (415,), "image/jpeg"),
    image_case("png-declared-dicom", png(), (415,), "application/dicom"),
    image_case("jpeg-declared-html", jpeg(), (415,), "text/html"),
    # huge declared dimensions (decompression bombs)
    image_case("png-claims-100000-squared", png_claiming(100_000, 100_000), (413,)),
    image_case("png-claims-one-long-side", png_claiming(60_000, 1), (413,)),
    image_case("png-idat-inflates-to-40mb", png_idat_bomb(), (200, 422)),
    image_case("png-ztxt-inflates-to-64mb", png_with_text_bomb(), (200, 422)),
    image_case("jpeg-claims-65000-squared", jpeg_claiming(65_000, 65_000), (413,), "image/jpeg"),
    image_case(
        "dicom-claims-60000-squared",
        dicom(60_000, 60_000, pixel_bytes=b"\0" * 256),
        (413,),
        "application/dicom",
    ),
    image_case(
        "dicom-pixel-data-shorter-than-header",
        dicom(64, 64, pixel_bytes=b"\0" * 100),
        (422,),
        "application/dicom",
    ),
    image_case("dicom-without-pixel-data", dicom(with_pixels=False), (422,), "application/dicom"),
    image_case("dicom-deflate-bomb", deflated_dicom_bomb(), (413, 422), "application/dicom"),
    # file names: ignored, never echoed, never used as a path
    image_case("name-path-traversal", png(), (200,), name=f"../../../../tmp/{SECRET_NAME}.png"),
    image_case("name-absolute-path", png(), (200,), name=f"/etc/{SECRET_NAME}"),
    image_case("name-windows-path", png(), (200,), name=f"C:\\Windows\\{SECRET_NAME}.png"),
    image_case("name-overlong", png(), (200, 400), name=SECRET_NAME + "x" * 20_000),
    raw_case(
        "name-with-nul-and-crlf",
        [
            (
                b'Content-Disposition: form-data; name="image"; filename="'
                + SECRET_NAME.encode()
                + b'\x00.png"\r\nContent-Type: image/png',
                png(),
            )
        ],
        (200, 400),
    ),
    raw_case(
        "name-bad-utf8",
        [
            (
                b'Content-Disposition: form-data; name="image"; filename="\xff\xfe'
                + SECRET_NAME.encode()
                + b'.png"\r\nContent-Type: image/png',
                png(),
            )
        ],
        (200, 400),
    ),
    # text fields
    Case("text-over-char-limit", (413,), data={"text": "effusion " * 1000}),
    Case("text-over-multipart-field-limit", (400, 413), data={"text": "x" * (1024 * 1024 + 10)}),
    raw_case("text-bad-utf8", [(TEXT_HEAD, b"cough \xff\xfe\xc3\x28 fever")], (200, 400, 422)),
    Case("text-control-and-bidi-characters", (200,), data={"text": "cough\x00\x1b[31m\u202efever\ufeff"}),
    Case("text-and-sections-together", (422,), data={"text": "a", "findings": "b"}),
    # fields in the wrong shape, repeated or too many
    Case(
        "two-images",
        (422,),
        files=[("image", ("a.png", png(), "image/png")), ("image", ("b.png", png(), "image/png"))],
    ),
    Case("five-images", (400, 422), files=[("image", (f"{i}.png", png(), "image/png")) for i in range(5)]),
    Case("image-as-text-field", (422,), data={"image": f"{SECRET_NAME}.png"}),
    Case("text-as-file", (422,), files=[("text", (f"{SECRET_NAME}.txt", b"cough", "text/plain"))]),
    Case("many-unknown-fields", (400, 422), data={f"field{i}": "x" for i in range(200)}),
    Case("json-body", (422,), content=b'{"text": "cough"}', headers={"Content-Type": "application/json"}),
    Case(
        "multipart-without-boundary",
        (400, 422),
        content=b"--x\r\n\r\n",
        headers={"Content-Type": "multipart/form-data"},
    ),
    raw_case("multipart-unterminated", [(FILE_HEAD, png())], (200, 400, 422)),
    # sizes
    image_case("body-over-limit", png(1600, 1600), (413,)),
    Case(
        "chunked-body-over-limit",
        (413,),
        content=None,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    ),
    Case("content-length-not-a-number", (400,), content=b"x", headers={"Content-Length": "12abc"}),
]
assert len(CASES) >= 30


@pytest.fixture(scope="module")
def client(tiny_run, predictor):
    app = create_app(tiny_run, predictor=predictor, limits=LIMITS)
    with local_client(app, raise_server_exceptions=False) as c:
        yield c


def send(client, case: Case):
    if case.id == "chunked-body-over-limit":  # a generator body: sent chunked, no Content-Length
        return client.post(
            "/v1/predict", content=chunks(LIMITS.max_request_bytes + 256 * 1024), headers=case.headers
        )
    if case.id == "multipart-unterminated":
        body, headers = multipart([(FILE_HEAD, png())])
        return client.post("/v1/predict", content=body[: -len(b"--fuzzboundary--\r\n")], headers=headers)
    return client.post(
        "/v1/predict", files=case.files, data=case.data, content=case.content, headers=case.headers or None
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_upload_gets_its_status_and_leaves_no_trace(client, case, caplog, tmp_path):
    with caplog.at_level(logging.DEBUG):
        response = send(client, case)
    assert response.status_code in case.expect, (case.id, response.status_code, response.text[:300])
    assert response.status_code < 500
    assert SECRET_NAME not in response.text  # file names are never echoed
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert SECRET_NAME not in caplog.text


def test_nothing_was_written_outside_the_upload_folder(client):
    from pathlib import Path

    client.post("/v1/predict", files={"image": (f"../../../../tmp/{SECRET_NAME}.png", png(), "image/png")})
    assert not list(Path("/tmp").glob(f"{SECRET_NAME}*"))


def test_health_stays_fast_after_the_fuzzing(client):
    for case in CASES[:10]:
        send(client, case)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        assert client.get("/v1/health").json()["status"] == "ok"
        timings.append(time.perf_counter() - started)
    assert sorted(timings)[2] < 1.0, timings  # median; in-process it is a few ms
