"""Load test of the HTTP service: N concurrent clients for S seconds on loopback, latency p50 / p99, errors.

`python benchmarks/bench_serve.py --index DIR [--clients 8] [--seconds 30] [--mode similar|photos] [--photos ...]`
starts `scripts/serve.py` on a free loopback port (or uses --url of a running one), waits for /health, then each
client sends requests back to back: `similar` asks GET /articles/{id}/similar for random ids of the export (the
server then needs no encoder: started with --vectors-only), `photos` uploads --photos to POST /search. Prints
requests, requests/s, p50 / p99 / max latency and the error count (non-200 answers and failed connections).
A benchmark, not a test: client and server share the machine's cores, so run it on an otherwise idle machine.
"""

import argparse
import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from setenc.plumbing.cli import run_main

REPO = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, help="export folder (its ids.json gives the ids to ask for)")
    p.add_argument("--url", default=None, help="a running service (default: start scripts/serve.py here)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--mode", choices=["similar", "photos"], default="similar")
    p.add_argument("--photos", nargs="*", default=[], help="with --mode photos: the query set uploaded")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--rerank", default=None, help="matcher re-scoring the candidates (e.g. chamfer)")
    p.add_argument("--startup-s", type=float, default=300, help="how long to wait for the server to answer")
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(client, url: str, server: subprocess.Popen | None, timeout: float) -> dict:
    """The service's /health once it answers; a server that exits or never answers is an error."""
    from setenc.plumbing.errors import SetencError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            said = server.stderr.read().strip().splitlines()
            raise SetencError(f"the server exited with status {server.returncode}: {said[-1] if said else ''}")
        try:
            return client.get(f"{url}/health", timeout=5).json()
        except Exception:  # noqa: BLE001 — not listening yet
            time.sleep(0.2)
    raise SetencError(f"{url}/health did not answer within {timeout:.0f}s")


def worker(url: str, args, ids: list[str], deadline: float, seed: int, out: list, errors: list) -> None:
    """One client: requests back to back until the deadline, appending latencies (s) and errors."""
    import httpx

    rng = random.Random(seed)
    params = {"k": args.k, **({"rerank": args.rerank} if args.rerank else {})}
    files = [("photos", (Path(p).name, Path(p).read_bytes())) for p in args.photos]
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                if args.mode == "similar":
                    r = client.get(f"{url}/articles/{rng.choice(ids)}/similar", params=params)
                else:
                    r = client.post(f"{url}/search", files=files, data=params)
                ok = r.status_code == 200
            except httpx.HTTPError as e:
                ok, r = False, e
            (out if ok else errors).append(time.perf_counter() - start if ok else str(getattr(r, "text", r))[:200])


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    args = parse_args()
    import httpx

    from setenc.plumbing.errors import SetencError

    if args.mode == "photos" and not args.photos:
        raise SetencError("--mode photos needs --photos: the query set to upload")
    ids = json.loads((Path(args.index) / "ids.json").read_text())
    server, url = None, args.url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, str(REPO / "scripts/serve.py"), "--index", args.index, "--port", str(port)]
        server = subprocess.Popen(cmd + (["--vectors-only"] if args.mode == "similar" else []),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client() as client:
            health = wait_healthy(client, url, server, args.startup_s)
        latencies, errors = [], []
        deadline = time.monotonic() + args.seconds
        threads = [threading.Thread(target=worker, args=(url, args, ids, deadline, c, latencies, errors))
                   for c in range(args.clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    n = len(latencies)
    print(f"{url} ({health['articles']} articles, index {health['index']}), mode {args.mode}"
          f"{' rerank ' + args.rerank if args.rerank else ''}, {args.clients} clients for {wall:.1f}s")
    print(f"requests {n}, {n / wall:.1f}/s, p50 {1e3 * percentile(latencies, 0.5):.1f} ms, "
          f"p99 {1e3 * percentile(latencies, 0.99):.1f} ms, max {1e3 * max(latencies, default=float('nan')):.1f} ms, "
          f"errors {len(errors)}")
    for e in sorted(set(errors))[:5]:
        print(f"  error: {e}")


if __name__ == "__main__":
    run_main(main)
