"""Load test of ``medmodal serve`` on loopback: requests/s and p50/p95 latency at 1, 8 and 32 clients.

Starts a real uvicorn server (``medmodal serve RUN``) in a subprocess, then drives
``POST /v1/predict`` (a PNG of the dataset + its indication text) with N concurrent
clients (httpx, asyncio), each sending its next request as soon as the previous one
returns. Writes ``benchmarks/results/serving_load.json`` and prints a Markdown table.

    .venv/bin/python benchmarks/serving_load.py --run RUN --data DATA
    .venv/bin/python benchmarks/serving_load.py            # trains a small run first (~1-2 min)

Without ``--run`` it generates 200 synthetic studies at 64 px and trains the default
model (embed_dim 64, 2 epochs, report generation on) into ``--work``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="trained run folder (default: train a small one into --work)")
    p.add_argument("--data", help="dataset whose images/texts are sent (default: the run's training data)")
    p.add_argument("--work", default=str(ROOT / ".cache" / "serving_load"), help="folder for the small run")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    p.add_argument(
        "--requests", type=int, default=64, help="requests per concurrency level (at least 2 x clients)"
    )
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving_load.json"))
    return p.parse_args()


def small_run(work: Path) -> tuple[Path, Path]:
    from medmodal.config import Config, apply_overrides
    from medmodal.data.synthetic import generate_dataset
    from medmodal.training.trainer import train

    data, run = work / "data", work / "run"
    if not (data / "manifest.csv").exists():
        generate_dataset(data, n=200, seed=0, image_size=64, progress=False)
    if not (run / "training_done.json").exists():
        config = apply_overrides(
            Config(),
            {"data.image_size": 64, "model.embed_dim": 64, "train.epochs": 2, "train.progress_bar": False},
        )
        train(data, config, run)
    return run, data


def payloads(data: Path, n: int = 16) -> list[tuple[bytes, str]]:
    from medmodal.data.manifest import read_manifest

    studies = [s for s in read_manifest(data).studies if s.image is not None][:n]
    return [(s.image.read_bytes(), s.sections.get("indication", "")) for s in studies]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run: Path, port: int, runtime: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "medmodal.cli.main",
        "-q",
        "serve",
        str(run),
        "--port",
        str(port),
        "--runtime",
        runtime,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start within 180 s")


async def drive(url: str, bodies: list[tuple[bytes, str]], clients: int, total: int) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            image, text = bodies[i % len(bodies)]
            started = time.perf_counter()
            response = await http.post(
                "/v1/predict",
                files={"image": ("x.png", image, "image/png")},
                data={"text": text} if text else None,
            )
            latencies.append(time.perf_counter() - started)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": total,
        "errors": errors,
        "requests_per_s": round(total / wall, 2),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[max(0, round(0.95 * len(ordered)) - 1)], 1),
        "wall_s": round(wall, 2),
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| clients | requests | errors | requests/s | p50 latency (ms) | p95 latency (ms) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['requests_per_s']} | "
            f"{r['p50_ms']} | {r['p95_ms']} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.run:
        run = Path(args.run)
        data = (
            Path(args.data)
            if args.data
            else Path(json.loads((run / "data_summary.json").read_text())["file"])
        )
    else:
        run, data = small_run(Path(args.work))
    bodies = payloads(data)
    port = free_port()
    server = start_server(run, port, args.runtime)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(drive(url, bodies, clients=2, total=6))  # warm-up
        results = []
        for clients in (int(c) for c in args.concurrency.split(",")):
            results.append(asyncio.run(drive(url, bodies, clients, max(args.requests, 2 * clients))))
            print(results[-1], flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    from medmodal.config import load_config

    cfg = load_config(run / "config.yaml")
    report = {
        "command": "python benchmarks/serving_load.py " + " ".join(sys.argv[1:]),
        "runtime": args.runtime,
        "model": {
            "image_size": cfg.data.image_size,
            "embed_dim": cfg.model.embed_dim,
            "generation": cfg.model.heads.generation,
            "beam_size": cfg.evaluate.beam_size,
            "max_generate_tokens": cfg.evaluate.max_generate_tokens,
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(results))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
