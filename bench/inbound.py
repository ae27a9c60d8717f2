"""Replies: classification throughput, and the inbound webhook's latency under load.

    .venv/bin/python -m bench.inbound [--rate 200] [--seconds 30] [--runs 3] [--workers 2,1]
                                      [--sweep 150,200,250,300,350]

- classification: `keywords.classify` over the regression corpus's texts, repeated (one core);
- webhook: `campaigns serve --workers N` (uvicorn, PostgreSQL) in its own processes, 10,000
  enrolled patients, and a second process sending signed `POST /webhooks/twilio/sms` requests
  open-loop at a fixed rate over loopback, from one asyncio loop (uvloop) with keep-alive
  connections: each request is due at its own time and its latency is counted from then, so a
  slow answer delays the ones behind it in the figures too (no coordinated omission). The
  generator shares the two cores, so it also records when it actually wrote each request:
  its own lateness is reported apart from the service's time. The texts are the corpus's
  (safety signs, STOP, BOOK, chatter), from enrolled numbers and a few unknown ones.
- saturation: one run per offered rate of the sweep, 2 web processes; the highest rate whose
  p99 stays under 50 ms, and the rate the service can no longer keep up with.
"""

from __future__ import annotations

import argparse
import collections
import csv
import http.client
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

from bench.common import fresh_postgres, save
from bench.providers import enroll
from campaigns.rules.keywords import classify, load_reader

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "reply_corpus.tsv"
TOKEN = "bench_auth_token_0123456789abcdef"
PUBLIC = "https://sms.bench.example"
PATH = "/webhooks/twilio/sms"
#: Connections the load generator keeps open (one more is opened whenever all are busy).
CONNECTIONS = 32


def corpus_texts() -> list[str]:
    with CORPUS.open(encoding="utf-8", newline="") as handle:
        return [
            row[0]
            for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            if row and not row[0].startswith("#") and row[0] != "text"
        ]


def classification_rate(messages: int, repeat: int) -> list[float]:
    reader = load_reader(ROOT / "templates" / "_keywords")
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
            classify(message, reader)
        rates.append(messages / (time.perf_counter() - started))
    return rates


def _signed_requests(port: int, rate: float, seconds: float, phones: list[str]) -> list[bytes]:
    """Every request of a run, signed and encoded to bytes before the clock starts."""
    texts = corpus_texts()
    validator = RequestValidator(TOKEN)
    rng = random.Random(os.getpid())
    requests = []
    for i in range(int(rate * seconds)):
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
        body = urllib.parse.urlencode(params).encode()
        signature = validator.compute_signature(PUBLIC + PATH, params)
        requests.append(
            (
                f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
    return requests


def _load(port: int, rate: float, seconds: float, phones: list[str], out: Any) -> None:
    """Open-loop load from its own process (one asyncio loop on uvloop, keep-alive connections
    taken from a pool, a new one when none is free): request i is due at start + i / rate.
    For each request it records when it was due, when its bytes were written and when its
    answer was complete, so the generator's own lateness (written - due) is measured apart
    from the service's (complete - written)."""
    import asyncio

    import uvloop

    requests = _signed_requests(port, rate, seconds, phones)
    timings: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] * len(requests)
    failures: list[int] = []

    async def read_answer(reader: asyncio.StreamReader) -> int:
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await reader.readexactly(length)
        return status

    async def main() -> float:
        loop = asyncio.get_running_loop()
        # Keep-alive connections opened up front and used in turn (oldest idle first), so the
        # requests spread over every web process the way many callers' connections would.
        idle: collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            collections.deque(
                [await asyncio.open_connection("127.0.0.1", port) for _ in range(CONNECTIONS)]
            )
        )
        start = loop.time() + 0.5

        async def one(i: int, due: float) -> None:
            connection = (
                idle.popleft() if idle else await asyncio.open_connection("127.0.0.1", port)
            )
            reader, writer = connection
            written = loop.time()
            try:
                writer.write(requests[i])
                status = await read_answer(reader)
            except (OSError, asyncio.IncompleteReadError):
                failures.append(0)
                writer.close()
            else:
                if status != 200:
                    failures.append(status)
                idle.append(connection)
            timings[i] = (due, written, loop.time())

        tasks = []
        for i in range(len(requests)):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i, due)))
        await asyncio.gather(*tasks)
        return loop.time() - start

    cpu = time.process_time()
    elapsed = uvloop.run(main())
    out.put(
        {
            "timings": timings,
            "failures": failures,
            "achieved_rate": len(requests) / elapsed,
            "generator_cpu_ms_per_request": (time.process_time() - cpu) * 1000 / len(requests),
        }
    )


@contextmanager
def web_server(url: str, workers: int) -> Iterator[int]:
    """`campaigns serve --only webhooks --workers N` (the public listener, as docker-compose.yml
    runs it); yields its port."""
    port = 18_000 + os.getpid() % 1000
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGNS_")}
    env.update(
        CAMPAIGNS_DATABASE_URL=url,
        CAMPAIGNS_BROKER_URL="redis://127.0.0.1:6379/14",  # not embedded: the web process only
        CAMPAIGNS_PUBLIC_URL=PUBLIC,
        TWILIO_AUTH_TOKEN=TOKEN,
        CAMPAIGNS_SMS_PROVIDER="local",
        CAMPAIGNS_EMAIL_PROVIDER="local",
    )
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "campaigns"),
            "serve",
            "--only",
            "webhooks",
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
        yield port
    finally:
        server.terminate()
        server.wait(30)


def measure(port: int, phones: list[str], rate: float, seconds: float) -> dict[str, Any]:
    queue: Any = mp.Queue()
    loader = mp.Process(target=_load, args=(port, rate, seconds, phones, queue))
    before = cpu_times()
    loader.start()
    measured = queue.get()
    loader.join()
    return {**_summary(measured), "steal_percent": steal_percent(before, cpu_times())}


def cpu_times() -> list[int]:
    """The machine's CPU time by kind, from /proc/stat (user nice system idle iowait irq
    softirq steal)."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:9]]


def steal_percent(before: list[int], after: list[int]) -> float:
    """How much of the time the hypervisor gave our virtual CPUs to someone else: a run with
    much of it measures the neighbours, not the service."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return round(100 * spent[7] / max(1, sum(spent)), 1)


def webhook_latency(
    url: str, phones: list[str], rate: float, seconds: float, workers: int, repeat: int
) -> dict[str, Any]:
    with web_server(url, workers) as port:
        measure(port, phones, rate, 10.0)  # warm-up
        runs = []
        for number in range(1, repeat + 1):
            runs.append(measure(port, phones, rate, seconds))
            print(f"  {workers} web process(es), run {number}: {runs[-1]}", flush=True)
    return {
        "rate": rate,
        "seconds": seconds,
        "web_processes": workers,
        "runs": runs,
        "median_p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "median_p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "failures": sum(r["failures"] for r in runs),
    }


def saturation(url: str, phones: list[str], rates: list[float], seconds: float) -> dict[str, Any]:
    """One run per offered rate with 2 web processes: where p99 passes 50 ms, and where the
    service stops keeping up (achieved below 98% of offered, or p99 over a second)."""
    runs = []
    with web_server(url, 2) as port:
        measure(port, phones, rates[0], 10.0)  # warm-up
        for rate in rates:
            runs.append({"offered": rate, **measure(port, phones, rate, seconds)})
            print("  saturation:", runs[-1], flush=True)
    within = [r["offered"] for r in runs if r["p99_ms"] < 50 and not r["failures"]]
    kept_up = [
        r["offered"]
        for r in runs
        if r["achieved_rate"] >= 0.98 * r["offered"] and r["p99_ms"] < 1000
    ]
    return {
        "web_processes": 2,
        "seconds": seconds,
        "runs": runs,
        "highest_rate_with_p99_under_50ms": max(within, default=None),
        "highest_rate_kept_up": max(kept_up, default=None),
    }


def _summary(measured: dict[str, Any]) -> dict[str, Any]:
    timings = measured["timings"]
    total = sorted(done - due for due, _, done in timings)  # what a patient would see
    late = sorted(written - due for due, written, _ in timings)  # the generator's own delay
    service = sorted(done - written for _, written, done in timings)
    return {
        "requests": len(total),
        "achieved_rate": round(measured["achieved_rate"], 1),
        "failures": len(measured["failures"]),
        "failure_statuses": dict(Counter(measured["failures"])),
        "p50_ms": round(_pct(total, 0.50) * 1000, 2),
        "p95_ms": round(_pct(total, 0.95) * 1000, 2),
        "p99_ms": round(_pct(total, 0.99) * 1000, 2),
        "max_ms": round(total[-1] * 1000, 2),
        "generator_late_p99_ms": round(_pct(late, 0.99) * 1000, 2),
        "generator_cpu_ms_per_request": round(measured["generator_cpu_ms_per_request"], 3),
        "service_p99_ms": round(_pct(service, 0.99) * 1000, 2),
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
    parser.add_argument(
        "--sweep", default="150,200,250,300,350,400", help="offered rates for the saturation runs"
    )
    args = parser.parse_args()
    rates = classification_rate(args.messages, args.repeat)
    print("classification per second:", [round(r) for r in rates], flush=True)
    webhook = []
    with fresh_postgres("bench_inbound") as url:
        enroll(url, args.patients)
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
        sweep = [float(r) for r in args.sweep.split(",") if r]
        saturated = saturation(url, phones, sweep, 20.0) if sweep else None
    result = {
        "classification": {
            "messages": args.messages,
            "runs_per_second": [round(r) for r in rates],
            "median_per_second": round(statistics.median(rates)),
        },
        "webhook": webhook,
        "saturation": saturated,
    }
    print(save("inbound", result))


if __name__ == "__main__":
    main()
