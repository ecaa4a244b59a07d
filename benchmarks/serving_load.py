"""Load test of a served student (``mlflow models serve``) on loopback: several concurrent clients send a
fixed number of requests each, reviews of mixed lengths and a few malformed bodies among them. Reports
p50/p99 latency, throughput and the status codes; the server must answer no 5xx and every malformed
body with a 400.

    mlflow models serve -m models:/kd-imdb-student@champion --env-manager local -p 5001 &
    python benchmarks/serving_load.py --url http://127.0.0.1:5001 --clients 4 --requests 200 --data ../shared/data/imdb

Exits 1 if any answer is a 5xx, a malformed body is not answered 400 or a good one is not answered 200.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter

import click
import numpy as np
import requests

from kd_imdb.data import load_data

# Bodies a client may get wrong: non-text reviews, no review, the wrong field, not JSON at all.
MALFORMED = [
    '{"inputs": [5]}',
    '{"inputs": {"text": 5}}',
    '{"instances": [null]}',
    '{"dataframe_records": [{"text": 5}]}',
    '{"dataframe_split": {"columns": ["text"], "data": [[null]]}}',
    '{"inputs": [""]}',
    '{"text": "a review"}',
    'null',
    'not json',
]


def good_bodies(texts: list[str], rng: np.random.Generator, n: int) -> list[str]:
    """``n`` request bodies of 1-8 reviews each, one in eight a very long review (several joined)."""
    bodies = []
    for _ in range(n):
        batch = [texts[i] for i in rng.integers(0, len(texts), size=int(rng.integers(1, 9)))]  # indices: no array of texts
        if rng.random() < 1 / 8:
            batch[0] = " ".join(texts[i] for i in rng.integers(0, len(texts), size=8))  # ~2,000 words
        bodies.append(json.dumps({"inputs": batch}))
    return bodies


def run_load(url: str, clients: int, requests_per_client: int, texts: list[str], malformed_every: int = 10,
             seed: int = 0) -> dict:
    """Every client sends its bodies one after the other; returns latencies, counts and failures."""
    rng = np.random.default_rng(seed)
    plans = []
    for c in range(clients):
        goods = iter(good_bodies(texts, rng, requests_per_client))
        plan = []
        for i in range(requests_per_client):
            bad = i % malformed_every == malformed_every - 1
            plan.append((MALFORMED[(c + i) % len(MALFORMED)], 400) if bad else (next(goods), 200))
        plans.append(plan)
    results: list[tuple[float, int, int, str]] = []  # (latency s, status, expected status, body)
    lock = threading.Lock()

    def client(plan) -> None:
        session = requests.Session()
        for body, expected in plan:
            t0 = time.perf_counter()
            response = session.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"},
                                    timeout=60)
            latency = time.perf_counter() - t0
            with lock:
                results.append((latency, response.status_code, expected, response.text))

    threads = [threading.Thread(target=client, args=(plan,)) for plan in plans]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    good = np.array([lat for lat, _, expected, _ in results if expected == 200])
    return {
        "clients": clients, "requests": len(results), "wall_s": wall, "requests_per_s": len(results) / wall,
        "p50_ms": float(np.percentile(good, 50) * 1e3), "p99_ms": float(np.percentile(good, 99) * 1e3),
        "status": dict(Counter(status for _, status, _, _ in results)),
        "server_errors": sum(status >= 500 for _, status, _, _ in results),
        "wrong_status": [(expected, status, text[:200]) for _, status, expected, text in results if status != expected],
        "tracebacks": sum("Traceback" in text or "stack_trace" in text for _, _, _, text in results),
    }


@click.command()
@click.option("--url", required=True, help="The served model, e.g. http://127.0.0.1:5001.")
@click.option("--clients", default=4, show_default=True, type=int, help="Concurrent clients.")
@click.option("--requests", "requests_per_client", default=100, show_default=True, type=int, help="Requests per client.")
@click.option("--malformed-every", default=10, show_default=True, type=int, help="Every Nth request is malformed.")
@click.option("--data", default="sample", show_default=True, help="Where the reviews come from (test split).")
@click.option("--json-out", default="", help="Also write the figures to this JSON file.")
def main(url: str, clients: int, requests_per_client: int, malformed_every: int, data: str, json_out: str) -> None:
    texts = load_data(data).split("test")["text"].tolist()
    figures = run_load(url, clients, requests_per_client, texts, malformed_every)
    print(f"{figures['clients']} clients, {figures['requests']} requests in {figures['wall_s']:.1f} s: "
          f"{figures['requests_per_s']:.1f} requests/s; good requests p50 {figures['p50_ms']:.1f} ms, "
          f"p99 {figures['p99_ms']:.1f} ms; status {figures['status']}; 5xx {figures['server_errors']}; "
          f"wrong status {len(figures['wrong_status'])}; bodies with a traceback {figures['tracebacks']}")
    for expected, status, text in figures["wrong_status"][:5]:
        print(f"  expected {expected}, got {status}: {text}")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(figures, f, indent=2)
    if figures["server_errors"] or figures["wrong_status"] or figures["tracebacks"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
