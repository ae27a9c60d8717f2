"""Replies: classification throughput, and the inbound webhook's latency under load.

    .venv/bin/python -m bench.inbound [--rate 200] [--seconds 30] [--runs 3] [--workers 2,1]

- classification: `keywords.classify` over the regression corpus's texts, repeated (one core);
- webhook: `campaigns serve --workers N` (uvicorn, PostgreSQL) in its own processes, 10,000 enrolled
  patients, and a second process sending signed `POST /webhooks/twilio/sms` requests open-loop
  at a fixed rate over loopback: each request is due at its own time and its latency is counted
  from then, so a slow answer delays the ones behind it in the figures too (no coordinated
  omission). The texts are the corpus's (safety signs, STOP, BOOK, chatter), from enrolled
  numbers and a few unknown ones.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

from bench.common import fresh_postgres, save
from bench.providers import enrol
from campaigns.keywords import classify, load_lexicons

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "reply_corpus.tsv"
TOKEN = "bench_auth_token_0123456789abcdef"
PUBLIC = "https://sms.bench.example"
PATH = "/webhooks/twilio/sms"


def corpus_texts() -> list[str]:
    with CORPUS.open(encoding="utf-8", newline="") as handle:
        return [
            row[0]
            for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            if row and not row[0].startswith("#") and row[0] != "text"
        ]


def classification_rate(messages: int, repeat: int) -> list[float]:
    lexicon = load_lexicons(ROOT / "templates" / "_keywords")["en"]
    texts = corpus_texts()
    rng = random.Random(1)
    # The corpus, plus the same texts with a random word added: a vocabulary that keeps growing.
    workload = [
        t if i % 2 else f"{t} {rng.choice(['ok', 'hiya', 'x', str(i), 'thanks'])}"
        for i, t in enumerate(texts * (messages // len(texts) + 1))
    ][:messages]
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        for message in workload:
            classify(message, lexicon)
        rates.append(messages / (time.perf_counter() - started))
    return rates


def _load(port: int, rate: float, seconds: float, phones: list[str], out: Any) -> None:
    """Open-loop load from its own process: request i is due at start + i / rate."""
    texts = corpus_texts()
    validator = RequestValidator(TOKEN)
    rng = random.Random(os.getpid())
    total = int(rate * seconds)
    requests = []
    for i in range(total):
        sender = rng.choice(phones) if rng.random() > 0.05 else f"+4475{rng.randrange(10**8):08d}"
        params = {
            "MessageSid": f"SM{os.getpid():08d}{i:024d}",
            "AccountSid": "AC" + "b" * 32,
            "From": sender,
            "To": "+447700900000",
            "Body": rng.choice(texts),
            "NumMedia": "0",
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01",
        }
        signature = validator.compute_signature(PUBLIC + PATH, params)
        requests.append((urllib.parse.urlencode(params), signature))
    latencies: list[float] = [0.0] * total
    failures: list[int] = []
    lock = threading.Lock()
    next_index = iter(range(total))
    start = time.perf_counter() + 0.5

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            body, signature = requests[i]
            try:
                connection.request(
                    "POST",
                    PATH,
                    body=body,
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "X-Twilio-Signature": signature,
                    },
                )
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    failures.append(response.status)
            except OSError:
                failures.append(0)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            latencies[i] = time.perf_counter() - due

    threads = [threading.Thread(target=worker) for _ in range(48)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    achieved = total / (time.perf_counter() - start)
    out.put({"latencies": latencies, "failures": failures, "achieved_rate": achieved})


def webhook_latency(
    url: str, phones: list[str], rate: float, seconds: float, workers: int, repeat: int
) -> dict[str, Any]:
    port = 18_000 + os.getpid() % 1000
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGNS_")}
    env.update(
        CAMPAIGNS_DATABASE_URL=url,
        CAMPAIGNS_BROKER_URL="redis://127.0.0.1:6379/14",  # not embedded: the web process only
        CAMPAIGNS_PUBLIC_URL=PUBLIC,
        TWILIO_AUTH_TOKEN=TOKEN,
        CAMPAIGNS_SMS_PROVIDER="outbox",
        CAMPAIGNS_EMAIL_PROVIDER="outbox",
    )
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "campaigns"),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("campaigns serve did not start") from None
                time.sleep(0.3)
        runs = []
        for number, run_seconds in enumerate([10.0] + [seconds] * repeat):  # warm-up first
            queue: Any = mp.Queue()
            loader = mp.Process(target=_load, args=(port, rate, run_seconds, phones, queue))
            loader.start()
            measured = queue.get()
            loader.join()
            if number:
                runs.append(_summary(measured))
                print(f"  {workers} web process(es), run {number}: {runs[-1]}", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    return {
        "rate": rate,
        "seconds": seconds,
        "web_processes": workers,
        "runs": runs,
        "median_p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "median_p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "failures": sum(r["failures"] for r in runs),
    }


def _summary(measured: dict[str, Any]) -> dict[str, Any]:
    latencies = sorted(measured["latencies"])
    return {
        "requests": len(latencies),
        "achieved_rate": round(measured["achieved_rate"], 1),
        "failures": len(measured["failures"]),
        "p50_ms": round(_pct(latencies, 0.50) * 1000, 2),
        "p95_ms": round(_pct(latencies, 0.95) * 1000, 2),
        "p99_ms": round(_pct(latencies, 0.99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2),
    }


def _pct(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(len(values) * fraction))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5, help="classification runs")
    parser.add_argument("--runs", type=int, default=3, help="measured webhook runs")
    parser.add_argument(
        "--workers", default="2,1", help="web process counts to measure (one per core first)"
    )
    args = parser.parse_args()
    rates = classification_rate(args.messages, args.repeat)
    print("classification per second:", [round(r) for r in rates], flush=True)
    webhook = []
    with fresh_postgres("bench_inbound") as url:
        enrol(url, args.patients)
        # As a live database would be: statistics current after the bulk enrolment.
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("VACUUM ANALYZE"))
        engine.dispose()
        phones = [f"+4474{i:08d}" for i in range(args.patients)]
        for workers in (int(w) for w in args.workers.split(",")):
            webhook.append(
                webhook_latency(url, phones, args.rate, args.seconds, workers, args.runs)
            )
            print("webhook:", webhook[-1], flush=True)
    result = {
        "classification": {
            "messages": args.messages,
            "runs_per_second": [round(r) for r in rates],
            "median_per_second": round(statistics.median(rates)),
        },
        "webhook": webhook,
    }
    print(save("inbound", result))


if __name__ == "__main__":
    main()
