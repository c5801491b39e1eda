"""A tiny trained run shared by the serving tests (synthetic data, one epoch, 64 px)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from medmodal.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("serving-data")
    generate_dataset(out, n=80, seed=3, image_size=48, n_sites=2, masks=False, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A run with every head (classification, localization, generation) so all outputs are exercised.

    64 px with the default image encoder: its 4 x 4 read-out pools the stride-16 grid (4 x 4 here),
    which the ONNX export handles; a 2 x 2 grid (32 px) it cannot export.
    """
    from medmodal.config import Config, apply_overrides
    from medmodal.training.trainer import train

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = apply_overrides(
        Config(),
        {
            "data.image_size": 64,
            "model.embed_dim": 32,
            "train.epochs": 1,
            "train.progress_bar": False,
            "train.batch_size": 16,
            "data.max_target_tokens": 24,
            "evaluate.max_generate_tokens": 12,
            "evaluate.beam_size": 1,
        },
    )
    out = tmp_path_factory.mktemp("serving-run") / "run"
    try:
        train(tiny_data, config, out)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def predictor(tiny_run):
    from medmodal.serving.predictor import Predictor

    return Predictor.from_run(tiny_run)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A real uvicorn server on loopback in a background thread (the service's own uvicorn config)."""

    def __init__(self, app, limits=None):
        import uvicorn

        from medmodal.serving.security import ServingLimits
        from medmodal.serving.server import uvicorn_config

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn_config(
            app, "127.0.0.1", self.port, limits or ServingLimits(), log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def local_client(app, **kwargs):
    """A TestClient addressing the app as ``http://localhost`` (a Host the service answers)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://localhost", **kwargs)
