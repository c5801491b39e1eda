"""Safety checks of the web service: API key, allowed hosts, request size and time, upload
format, image size, text length, and what a response may reveal about the server.

Every check raises :class:`RequestRejected` carrying the HTTP status and a message
that names the field but never echoes its content (uploads and report text are
patient data; the upload's file name may hold a patient name, so it is not echoed
either).

Order of the checks for an image upload (cheapest first, nothing decoded until
the header says the image is of an acceptable size):

1. request body size (:class:`BodySizeLimit`, before any parsing; 413);
2. format sniffed from the first bytes (PNG / JPEG / DICOM) and matched against
   the declared content type (415);
3. dimensions from the header only (413 over the limits): PIL reads width x height
   without decoding (PNG / JPEG only); a DICOM goes through
   :func:`~medmodal.data.images.check_image` with the service's pixel limit, which
   reads Rows / Columns (a Deflated DICOM is inflated with a bound first) and checks
   a compressed frame's own header against them, without decoding pixels. This is
   the decompression-bomb guard of the service (stricter than the data readers'
   default :data:`~medmodal.data.images.DEFAULT_MAX_PIXELS`);
4. a full decode with :func:`~medmodal.data.images.load_image` under the same pixel
   limit, which catches truncated files, corrupt data and DICOM without pixel data (422).

Error messages name the upload ``upload`` and never the server's temporary path.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

from PIL import Image

from medmodal.data.images import PIL_FORMATS, ImageReadError, check_image, load_image
from medmodal.errors import ConfigError, UnsafeFileError
from medmodal.safeio import UnreadableFileError

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
# Host header values always accepted (DNS-rebinding guard): the loopback names and addresses.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", "[::]", ""})
API_KEY_HEADER = "X-API-Key"
MIN_API_KEY_CHARS = 16

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
    body_timeout_s:    seconds from the start of a request until its whole body must have
                       arrived (slow or stalled uploads get 408 and the connection is closed).
    head_timeout_s:    seconds a connection may take to send a complete request line and
                       headers (a stalled or trickling head is closed; needs
                       :func:`medmodal.serving.server.uvicorn_config`).
    keep_alive_s:      seconds an idle keep-alive connection stays open between requests.
    max_connections:   open connections (and running requests) beyond which uvicorn answers
                       503 (its ``limit_concurrency``).
    """

    max_request_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_image_side: int = 16_384
    max_text_chars: int = 20_000
    max_pending: int = 256
    body_timeout_s: float = 60.0
    head_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        for name in (
            "max_request_bytes",
            "max_image_pixels",
            "max_image_side",
            "max_text_chars",
            "max_pending",
            "body_timeout_s",
            "head_timeout_s",
            "keep_alive_s",
            "max_connections",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"serving limit {name} must be positive")


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
        raise ConfigError(
            f"serving on {host} (reachable from other machines) needs an API key: set one with "
            "--api-key-env VAR (the name of an environment variable holding the key)"
        )


def validate_api_key(key: str) -> None:
    """Refuse a weak or unusable API key at start-up (ValueError saying why, never the key).

    At least :data:`MIN_API_KEY_CHARS` non-space characters, printable ASCII only (HTTP
    header values), no leading or trailing whitespace (servers strip it from headers, so
    such a key could never match).
    """
    if not isinstance(key, str) or not key:
        raise ConfigError("the API key is empty")
    if sum(not ch.isspace() for ch in key) < MIN_API_KEY_CHARS:
        raise ConfigError(
            f"the API key is too short: use at least {MIN_API_KEY_CHARS} non-space characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if key != key.strip():
        raise ConfigError(
            "the API key starts or ends with whitespace (HTTP strips it; the key could never match)"
        )
    if any(not (32 <= ord(ch) < 127) for ch in key):
        raise ConfigError("the API key must be printable ASCII (it travels in an HTTP header)")


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> list[str]:
    """Host header values the service answers (the DNS-rebinding guard).

    Always the loopback names and addresses; the bind address itself when it is a
    specific one; plus ``extra`` (the names clients use, ``--allowed-host``). A wildcard
    bind (``0.0.0.0``, ``::``) without ``extra`` is refused: the service cannot know which
    names are its own.
    """
    names = [*LOOPBACK_HOSTS]
    bind = bind_host.strip().lower()
    extra = [name.strip().lower() for name in extra if name.strip()]
    if bind in WILDCARD_BINDS and not extra:
        raise ConfigError(
            f"serving on {bind_host or 'all interfaces'} needs the host names clients will use: "
            "--allowed-host NAME (repeatable), e.g. --allowed-host xray.example.org"
        )
    if bind not in WILDCARD_BINDS:
        names.append(bind)
        if ":" in bind and not bind.startswith("["):  # an IPv6 literal arrives in brackets
            names.append(f"[{bind}]")
    for name in extra:
        if "*" in name[1:] or (name.startswith("*") and not name.startswith("*.")) or name == "*":
            raise ConfigError(f"--allowed-host {name!r}: wildcards only as '*.example.org'")
        names.append(name)
    return list(dict.fromkeys(names))


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
        raise RequestRejected(415, f"the upload is declared as '{declared}' but its content is {fmt.upper()}")
    return fmt


def header_dimensions(path: Path, fmt: str, limits: ServingLimits) -> tuple[int, int]:
    """``(height, width)`` from the header only (no pixel decoding).

    PNG / JPEG: Pillow's lazy header read. DICOM: :func:`~medmodal.data.images.check_image`
    with the service's pixel limit (bounded inflate of a Deflated DICOM, frame header
    checked against Rows / Columns, nothing decoded).
    """
    try:
        if fmt == "dicom":
            return check_image(path, max_pixels=limits.max_image_pixels)
        with Image.open(path, formats=PIL_FORMATS) as img:
            width, height = img.size
            return height, width
    except ImageReadError as err:
        status = 413 if _is_pixel_budget(err) else 422
        raise RequestRejected(
            status, f"the uploaded image cannot be read: {_without_path(err.reason, path)}"
        ) from err
    except Image.DecompressionBombError as err:  # Pillow's own guard (twice its pixel limit) came first
        raise RequestRejected(
            413,
            f"the uploaded image has more than {limits.max_image_pixels} pixels (decompression-bomb guard)",
        ) from err
    except Exception as err:
        raise RequestRejected(
            422, f"the uploaded image header cannot be read ({type(err).__name__})"
        ) from err


def _is_pixel_budget(err: ImageReadError) -> bool:
    """The error of :func:`~medmodal.data.images.check_pixel_budget` (too many pixels)."""
    return "pixels, more than the limit" in err.reason


def _without_path(message: str, path: Path) -> str:
    """``message`` with the server's temporary path of the upload replaced by ``upload``."""
    return message.replace(str(path.parent), "upload").replace(str(path), "upload")


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
    check_dimensions(*header_dimensions(path, fmt, limits), limits)
    try:
        load_image(path, max_pixels=limits.max_image_pixels)
    except ImageReadError as err:
        status = 413 if _is_pixel_budget(err) else 422
        raise RequestRejected(
            status, f"the uploaded image cannot be decoded: {_without_path(err.reason, path)}"
        ) from err
    return path


# ---------------------------------------------------------------- responses
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]|^\\\\")


def is_absolute_path_text(value: str) -> bool:
    """True for text that is an absolute file path or file URL (POSIX, ``~``, Windows, UNC)."""
    return (value.startswith(("/", "~/", "file:")) and len(value) > 1) or bool(_WINDOWS_ABSOLUTE.match(value))


def redact_paths(value: Any) -> Any:
    """A copy of JSON-like ``value`` in which every string that is an absolute path is cut to
    its file name (``/srv/runs/a/checkpoints/best.ckpt`` -> ``best.ckpt``): where the
    server keeps its files is not the client's business."""
    if isinstance(value, dict):
        return {key: redact_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_paths(item) for item in value]
    if isinstance(value, str) and is_absolute_path_text(value):
        name = PureWindowsPath(value).name if _WINDOWS_ABSOLUTE.match(value) else Path(value.rstrip("/")).name
        return name or "(path)"
    return value


# ------------------------------------------------------------------- ONNX
def check_onnx_file(path: str | Path) -> None:
    """Refuse an ONNX file that would make onnxruntime read other files.

    ``serve --runtime onnx`` may load a cached ``RUN/export/model.onnx`` from a run folder
    someone else made. medmodal's own exports keep every weight inside the file, so any
    tensor stored as *external data* (a path onnxruntime would open: another file, a
    symlink, a device) is refused, in the main graph and in subgraphs. The graph itself
    is parsed by onnx's protobuf reader; onnxruntime runs only its built-in operators
    (no custom-op library is ever registered).

    Raises:
        ValueError: naming the file and the first offending tensor.
    """
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise UnreadableFileError(f"{path}: not a readable ONNX model ({type(err).__name__})") from err
    for tensor in _onnx_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise UnsafeFileError(
                f"{path}: tensor '{tensor.name[:80]}' is stored as external data (a separate file); "
                "medmodal exports keep all weights inside the .onnx file, so this file is refused "
                "(re-export it with `medmodal export RUN --onnx OUT.onnx`)"
            )


def _onnx_tensors(graph: Any):
    """Every TensorProto of ``graph``: initializers, sparse initializers, constant attributes,
    and the same inside subgraphs (If / Loop / Scan bodies)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _onnx_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _onnx_tensors(subgraph)
