"""Safety checks of the web service: API key, request size, upload format, image size, text length.

Every check raises :class:`RequestRejected` carrying the HTTP status and a message
that names the field but never echoes its content (uploads and report text are
patient data; the upload's file name may hold a patient name, so it is not echoed
either).

Order of the checks for an image upload (cheapest first, nothing decoded until
the header says the image is of an acceptable size):

1. request body size (:class:`BodySizeLimit`, before any parsing; 413);
2. format sniffed from the first bytes (PNG / JPEG / DICOM) and matched against
   the declared content type (415);
3. dimensions from the header only: PIL reads width x height without decoding,
   pydicom reads Rows / Columns with ``stop_before_pixels`` (413). This is the
   decompression-bomb guard: :mod:`medmodal.data.images` switches PIL's own guard
   (``Image.MAX_IMAGE_PIXELS``) off process-wide because large radiographs are
   legitimate training input, so the service enforces its own limit here;
4. a full decode with :func:`~medmodal.data.images.load_image`, which catches
   truncated files, corrupt data and DICOM without pixel data (422).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

import pydicom
from PIL import Image

from medmodal.data.images import ImageReadError, load_image

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
API_KEY_HEADER = "X-API-Key"

# format name -> (file suffix, content types accepted for it)
FORMATS: dict[str, tuple[str, frozenset[str]]] = {
    "png": (".png", frozenset({"image/png"})),
    "jpeg": (".jpg", frozenset({"image/jpeg", "image/jpg", "image/pjpeg"})),
    "dicom": (".dcm", frozenset({"application/dicom", "application/dicom+octet-stream"})),
}
GENERIC_CONTENT_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


class RequestRejected(Exception):
    """A request the service refuses: ``status`` (4xx) and a message safe to show and log."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServingLimits:
    """Limits of what one request may carry.

    max_request_bytes: whole request body (upload plus form fields).
    max_image_pixels:  width x height of an uploaded image (decompression-bomb guard).
    max_image_side:    longest side of an uploaded image, in pixels.
    max_text_chars:    characters of one text field.
    max_pending:       requests waiting for the model before new ones get 503.
    """

    max_request_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_image_side: int = 16_384
    max_text_chars: int = 20_000
    max_pending: int = 256

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_image_pixels", "max_image_side", "max_text_chars", "max_pending"):
            if getattr(self, name) <= 0:
                raise ValueError(f"serving limit {name} must be positive")


# ------------------------------------------------------------------ network
def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_api_key_for(host: str, api_key: str | None) -> None:
    """Refuse to bind beyond loopback without an API key."""
    if not is_loopback(host) and not api_key:
        raise ValueError(
            f"serving on {host} (reachable from other machines) needs an API key: set one with "
            "--api-key-env VAR (the name of an environment variable holding the key)"
        )


def check_api_key(given: str | None, expected: str | None) -> None:
    """Constant-time comparison of the request's key; no-op when the service has no key."""
    if expected is None:
        return
    if not given or not secrets.compare_digest(given.encode(), expected.encode()):
        raise RequestRejected(401, f"missing or wrong API key (send it in the {API_KEY_HEADER} header)")


# ------------------------------------------------------------------- text
def check_text(field: str, value: str | None, limits: ServingLimits) -> str | None:
    """The text of ``field`` if within the length limit (None or blank -> None)."""
    if value is None or not value.strip():
        return None
    if len(value) > limits.max_text_chars:
        raise RequestRejected(413, f"text field '{field}' is longer than {limits.max_text_chars} characters")
    return value


# ------------------------------------------------------------------ images
def sniff_format(head: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"dicom"`` from the first 132 bytes, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    return None


def check_content_type(fmt: str | None, content_type: str | None) -> str:
    """The sniffed format if the declared content type agrees with it; else 415."""
    declared = (content_type or "").split(";")[0].strip().lower()
    if fmt is None:
        raise RequestRejected(415, "the uploaded file is not a PNG, JPEG or DICOM (Part 10) image")
    if declared not in GENERIC_CONTENT_TYPES and declared not in FORMATS[fmt][1]:
        raise RequestRejected(
            415, f"the upload is declared as '{declared}' but its content is {fmt.upper()}"
        )
    return fmt


def header_dimensions(path: Path, fmt: str) -> tuple[int, int]:
    """``(height, width)`` from the header only (no pixel decoding)."""
    try:
        if fmt == "dicom":
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if "Rows" not in ds or "Columns" not in ds:
                raise RequestRejected(422, "the uploaded DICOM has no image (no Rows / Columns)")
            return int(ds.Rows), int(ds.Columns)
        with Image.open(path) as img:
            width, height = img.size
            return height, width
    except RequestRejected:
        raise
    except Exception as err:
        raise RequestRejected(422, f"the uploaded image header cannot be read ({type(err).__name__})") from err


def check_dimensions(height: int, width: int, limits: ServingLimits) -> None:
    if height <= 0 or width <= 0:
        raise RequestRejected(422, f"the uploaded image has an empty size {width} x {height}")
    if max(height, width) > limits.max_image_side or height * width > limits.max_image_pixels:
        raise RequestRejected(
            413,
            f"the uploaded image is {width} x {height} pixels; the limit is {limits.max_image_pixels} pixels "
            f"and {limits.max_image_side} per side",
        )


def validated_image_file(data: bytes, content_type: str | None, folder: Path, limits: ServingLimits) -> Path:
    """Write an uploaded image to ``folder`` after the format and size checks, and decode it once.

    Returns:
        the path of the stored file (suffix by its real format), known to decode.

    Raises:
        RequestRejected: 400 empty upload, 415 not an image / content type mismatch,
            413 too many pixels, 422 truncated / corrupt / DICOM without pixel data.
    """
    if not data:
        raise RequestRejected(400, "the uploaded image is empty")
    fmt = check_content_type(sniff_format(data[:132]), content_type)
    path = folder / f"upload{FORMATS[fmt][0]}"
    path.write_bytes(data)
    check_dimensions(*header_dimensions(path, fmt), limits)
    try:
        load_image(path)
    except ImageReadError as err:
        raise RequestRejected(422, f"the uploaded image cannot be decoded: {err.reason}") from err
    return path
