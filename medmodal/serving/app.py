"""The web service: ``create_app(run_dir)`` -> a FastAPI app (``medmodal serve`` runs it with uvicorn).

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):

* ``POST /v1/predict`` multipart: ``image`` (PNG, JPEG or DICOM file, optional) and
  optional text: ``text`` (free text or a report with section headers) or the section
  fields ``indication`` / ``findings`` / ``impression``. Returns the JSON of
  :meth:`~medmodal.serving.predictor.Predictor.predict` (the same as ``medmodal predict``).
* ``GET /v1/health``: liveness, runtime and queue depth (no API key needed).
* ``GET /v1/model``: label set, config, training data summary, training summary, metrics.
* ``/review/`` and ``/v1/review/...``: the case-review page and the reader ratings
  (:mod:`medmodal.serving.review`), when the app was given a dataset.

Concurrency: the model is loaded once. Requests are validated and their uploads decoded
concurrently on the server's thread pool; the model itself runs on one dedicated worker
thread, fed in arrival order (a queue; PyTorch parallelises inside each forward). At most
``limits.max_pending`` requests wait for it; beyond that new ones get 503 rather than
piling up memory.

Privacy: request bodies, report text and upload file names are never logged nor echoed
(validation errors carry the field and the problem, not the value); the service's own
log lines carry method, path, status and latency only; ``/v1/model`` shows no absolute
server path.

Network hardening (docs/security.md): only the Host header values in ``allowed_hosts``
are answered (loopback by default: a DNS-rebinding page cannot reach the API through a
browser); a request body must arrive within ``limits.body_timeout_s`` (408) and be at most
``limits.max_request_bytes`` (413); :mod:`medmodal.serving.server` adds the
request-head and keep-alive timeouts of the uvicorn server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypedDict

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medmodal import __version__
from medmodal.models.calibration import CALIBRATION_FILE
from medmodal.serving.onnx_export import export_onnx, onnx_trained_run
from medmodal.serving.predictor import Predictor
from medmodal.serving.review import ReviewService, mount_review
from medmodal.serving.security import (
    API_KEY_HEADER,
    LOOPBACK_HOSTS,
    RequestRejected,
    ServingLimits,
    check_api_key,
    check_onnx_file,
    check_text,
    redact_paths,
    validate_api_key,
    validated_image_file,
)

log = logging.getLogger("medmodal.serving")
SECTION_FIELDS = ("indication", "findings", "impression")
PREDICT_FIELDS = ("image", "text", *SECTION_FIELDS)
OPEN_PATHS = frozenset({"/v1/health"})


# ------------------------------------------------------------------ the model queue
class ModelWorker:
    """Runs model calls one at a time on a dedicated thread, with a bounded number waiting.

    ``submit(fn, *args)`` is awaited by request handlers; a full queue raises 503.
    """

    def __init__(self, max_pending: int):
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medmodal-model")
        self._lock = threading.Lock()
        self.pending = 0

    async def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self.pending >= self.max_pending:
                raise RequestRejected(503, "the model queue is full; retry shortly")
            self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        finally:
            with self._lock:
                self.pending -= 1

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Blocking variant for code already on a worker thread (the review page's renderers)."""
        return self._executor.submit(fn, *args, **kwargs).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------- middleware
class RequestBodyGuard:
    """ASGI middleware bounding what a request body may cost.

    * size: 413 for a body over ``max_bytes``, by Content-Length before reading, and by
      counting for bodies sent without one (chunked);
    * time: 408 when the whole body has not arrived ``timeout_s`` seconds after the
      request started (a stalled or trickling upload cannot hold a worker).

    The check runs inside ``receive``; since the framework may turn an error raised
    there into its own 400, the guard remembers the failure and replaces whatever
    response the app then starts with its own 413 / 408. These responses close the
    connection (the rest of the body is never read).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await _send_json(send, 400, "the Content-Length header is not a number")
            return
        if declared is not None and int(declared) > self.max_bytes:
            await _send_json(send, 413, f"request body larger than {self.max_bytes} bytes")
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        state: _GuardState = {"received": 0, "body_done": False, "failure": None, "started": False}

        async def guarded_receive() -> Message:
            if state["body_done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                state["failure"] = (408, f"the request body did not arrive within {self.timeout_s:g} seconds")
                raise _BodyRejected() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["failure"] = (413, f"request body larger than {self.max_bytes} bytes")
                    raise _BodyRejected()
            return message

        async def guarded_send(message: Message) -> None:
            if state["failure"] is not None:
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await _send_json(send, *state["failure"])
                return  # the app's own response to the failed body is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except _BodyRejected:
            pass
        if state["failure"] is not None and not state["started"]:
            await _send_json(send, *state["failure"])


class _GuardState(TypedDict):
    received: int  # body bytes so far
    body_done: bool
    failure: tuple[int, str] | None  # (status, detail) to answer with
    started: bool  # a response has been started


class _BodyRejected(Exception):
    pass


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# The review page loads only its own files; its images are fetched and shown as blob: URLs.
REVIEW_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def with_security_headers(response: Any, path: str) -> Any:
    """Browser hardening on every response: no MIME sniffing, no framing, no referrer; API
    answers (patient data) are not cached; the review page gets a Content-Security-Policy
    that allows only its own scripts and styles (the interactive ``/docs`` page, which
    FastAPI loads from a CDN, is left without one)."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if path.startswith("/v1/"):
        response.headers["Cache-Control"] = "no-store"
    if path.startswith("/review"):
        response.headers["Content-Security-Policy"] = REVIEW_CSP
    return response


def validation_problems(err: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's validation errors without the submitted values (``input``, ``ctx``): a
    value may be report text or an upload's file name (patient data)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in err.errors()
    ]


def reject_repeated_fields(form: Any, names: Sequence[str]) -> None:
    """422 when a form field comes more than once (two images: which one would count?)."""
    for name in names:
        count = len(form.getlist(name))
        if count > 1:
            raise RequestRejected(422, f"form field '{name}' was sent {count} times; send it once")


# ---------------------------------------------------------------------- the app
def create_app(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "test",
    ratings_url: str | Path | None = None,
    api_key: str | None = None,
    limits: ServingLimits | None = None,
    runtime: str = "torch",
    onnx_path: str | Path | None = None,
    predictor: Predictor | None = None,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
) -> FastAPI:
    """The FastAPI app serving the trained run in ``run_dir``.

    Args:
        run_dir: a trained run folder.
        data: dataset (folder or manifest) for the review page's worklist; no review page if None.
        split: the split of ``data`` listed in the worklist.
        ratings_url: SQLAlchemy URL or SQLite file of the reader ratings (default
            ``RUN/review/ratings.db``).
        api_key: required in the ``X-API-Key`` header of every request except ``/v1/health``;
            at least 16 non-space printable ASCII characters (ValueError otherwise).
        limits: request limits (:class:`ServingLimits`).
        runtime: ``"torch"``, or ``"onnx"`` to run the classification/localization graph in
            onnxruntime (``onnx_path``, exported first to ``RUN/export/model.onnx`` if not given).
        predictor: an already loaded predictor (tests), else loaded from ``run_dir``.
        allowed_hosts: Host header values answered (others get 400): loopback by default;
            :func:`~medmodal.serving.security.allowed_hosts` builds the list for a bind address.
    """
    limits = limits or ServingLimits()
    if api_key is not None:
        validate_api_key(api_key)
    predictor = predictor or load_predictor(run_dir, runtime=runtime, onnx_path=onnx_path)
    worker = ModelWorker(limits.max_pending)
    run_root = Path(run_dir).resolve()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="medmodal inference service",
        version=__version__,
        description="Findings, boxes and reports for chest X-ray studies from a trained medmodal run. "
        "Research software: not a medical device.",
    )
    app.state.predictor = predictor
    app.state.worker = worker
    app.state.limits = limits
    app.state.runtime = runtime
    app.add_middleware(RequestBodyGuard, max_bytes=limits.max_request_bytes, timeout_s=limits.body_timeout_s)

    @app.middleware("http")
    async def authenticate_and_log(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path
        if api_key is not None and path.startswith("/v1/") and path not in OPEN_PATHS:
            try:
                check_api_key(request.headers.get(API_KEY_HEADER), api_key)
            except RequestRejected as err:
                return with_security_headers(
                    JSONResponse({"detail": err.message}, status_code=err.status), path
                )
        response = await call_next(request)
        # Method, path and status only: never bodies, text or file names (patient data).
        log.info(
            "%s %s -> %d (%.0f ms)",
            request.method,
            path,
            response.status_code,
            1000 * (time.perf_counter() - started),
        )
        return with_security_headers(response, path)

    # Outermost: a request with a foreign Host header (DNS rebinding) is refused before anything else.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts), www_redirect=False)

    @app.exception_handler(RequestRejected)
    async def rejected(request: Request, err: RequestRejected):
        return JSONResponse({"detail": err.message}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        return JSONResponse({"detail": validation_problems(err)}, status_code=422)

    @app.get("/v1/health", summary="Liveness and queue depth")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "runtime": runtime,
            "pending": worker.pending,
            "labels": len(predictor.labels),
        }

    @app.get("/v1/model", summary="Label set, config, training data summary and metrics of the served run")
    def model_info() -> dict[str, Any]:
        return describe_run(predictor, run_root, runtime)

    @app.post(
        "/v1/predict",
        summary="Predict one study from an image upload and/or report text",
        form_limits={"max_files": 4, "max_fields": 8},
    )
    async def predict(
        request: Request,
        image: Annotated[UploadFile | None, File(description="PNG, JPEG or DICOM (Part 10) file")] = None,
        text: Annotated[str | None, Form(description="free text, or a report with section headers")] = None,
        indication: Annotated[str | None, Form()] = None,
        findings: Annotated[str | None, Form()] = None,
        impression: Annotated[str | None, Form()] = None,
    ) -> dict[str, Any]:
        reject_repeated_fields(await request.form(), PREDICT_FIELDS)  # parsed once, cached by Starlette
        text_input = text_from_fields(
            text, {"indication": indication, "findings": findings, "impression": impression}, limits
        )
        data_bytes = await image.read() if image is not None else None
        with tempfile.TemporaryDirectory(prefix="medmodal-upload-") as folder:
            path = None
            if data_bytes is not None:
                assert image is not None  # data_bytes comes from image
                path = await run_in_threadpool(
                    validated_image_file, data_bytes, image.content_type, Path(folder), limits
                )
            if path is None and text_input is None:
                raise RequestRejected(422, "send an image, some text, or both")
            try:
                return await worker.submit(predictor.predict, path, text_input)
            except ValueError as err:  # Predictor's input errors (no text in text's fields, ...)
                raise RequestRejected(422, str(err).replace(str(folder), "upload")) from err

    if data is not None:
        ratings = ratings_url or run_root / "review" / "ratings.db"
        service = ReviewService(
            predictor, data, split=split, ratings_url=ratings, worker=worker, model_name=run_root.name
        )
        mount_review(app, service)
        app.state.review = service
    return app


def text_from_fields(text: str | None, sections: dict[str, str | None], limits: ServingLimits):
    """The predictor's text input: free ``text``, or a dict of the given section fields, or None."""
    text = check_text("text", text, limits)
    given = {name: check_text(name, value, limits) for name, value in sections.items()}
    given = {name: value for name, value in given.items() if value is not None}
    if text is not None and given:
        raise RequestRejected(422, f"send either 'text' or section fields {sorted(given)}, not both")
    return text if text is not None else (given or None)


def load_predictor(
    run_dir: str | Path, runtime: str = "torch", onnx_path: str | Path | None = None
) -> Predictor:
    """The run's predictor with the PyTorch or the onnxruntime forward."""
    if runtime not in ("torch", "onnx"):
        raise ValueError(f"runtime must be 'torch' or 'onnx', not {runtime!r}")
    predictor = Predictor.from_run(run_dir)
    if runtime == "onnx":
        if onnx_path is None:
            onnx_path = Path(run_dir) / "export" / "model.onnx"
            if _export_is_stale(Path(onnx_path), predictor):
                export_onnx(run_dir, onnx_path)
        check_onnx_file(onnx_path)  # may come from someone else's run folder
        predictor = Predictor(onnx_trained_run(predictor.trained, onnx_path))
    return predictor


def _export_is_stale(onnx_path: Path, predictor: Predictor) -> bool:
    """The cached export is missing, or older than the checkpoint or the calibration it must
    contain (the ONNX graph carries the calibration of the model it was exported from)."""
    metadata = onnx_path.with_suffix(".json")
    if not onnx_path.exists() or not metadata.exists():
        return True
    if json.loads(metadata.read_text()).get("calibrated", False) != predictor.trained.calibrated:
        return True  # calibrated or un-calibrated since the export
    sources = [predictor.trained.checkpoint, predictor.trained.run.root / CALIBRATION_FILE]
    exported = onnx_path.stat().st_mtime_ns
    return any(path.exists() and path.stat().st_mtime_ns > exported for path in sources)


def describe_run(predictor: Predictor, run_root: Path, runtime: str) -> dict[str, Any]:
    """What ``GET /v1/model`` returns: the run's labels, config, data summary, training and metrics
    (absolute paths cut to file names: :func:`~medmodal.serving.security.redact_paths`)."""
    trained = predictor.trained
    run = trained.run

    def read_json(path: Path) -> Any:
        return json.loads(path.read_text()) if path.exists() else None

    summary = read_json(run.data_summary)
    if isinstance(summary, dict):  # paths on the training machine are not the client's business
        summary = {k: v for k, v in summary.items() if k not in ("file", "data", "problems")}
    return redact_paths(
        {
            "run": run_root.name,
            "runtime": runtime,
            "labels": trained.labels,
            "label_info": read_json(run.labels),
            "config": trained.config.model_dump(mode="json"),
            "training_data": summary,
            "training": read_json(run.root / "training_done.json"),
            "metrics": read_json(run.root / "metrics.json"),
            "checkpoint": trained.checkpoint.name,
            "generates_reports": bool(trained.config.model.heads.generation),
        }
    )
