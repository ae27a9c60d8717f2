"""Send throughput against the local Twilio server: the SDK's ceiling, and the whole service.

    .venv/bin/python -m bench.providers [--messages 20000] [--repeat 3] [--memory-run 100000]

- ceiling: a bare loop of `client.messages.create` in one process per core, measured with the
  SDK's default transport (requests) and with ours (`PooledTwilioHttpClient`, which the
  service uses), so the service can be compared with both;
- service: due rows -> dispatch (beat) -> Celery (Redis) -> render -> SDK -> local server ->
  recorded, with docker-compose.yml's worker shape (one process per core, threads inside);
both without latency and with 150 ms added to every call, interleaved and repeated (medians
reported). Then a long run for memory: the worker processes' resident memory early in the run
and at its end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from bench.common import fresh_postgres, save
from campaigns import enrollments
from campaigns.bootstrap import build
from campaigns.providers.twilio_http import PooledTwilioHttpClient
from campaigns.rules.intake import EnrollmentRequest
from campaigns.rules.vocabulary import Channel, ConsentPurpose, ConsentSource, EddSource
from campaigns.sandbox.credentials import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from campaigns.sandbox.twilio_server import TwilioSandbox
from campaigns.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIS = "redis://127.0.0.1:6379/13"
CORES = os.cpu_count() or 2


def _serve(port: int, latency: float) -> None:
    TwilioSandbox(port, latency=latency, callbacks=False).serve_forever()


def sandbox(port: int, latency: float) -> mp.Process:
    process = mp.Process(target=_serve, args=(port, latency), daemon=True)
    process.start()
    for _ in range(100):
        try:
            stats(f"http://127.0.0.1:{port}")
            return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("sandbox did not start")


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_sandbox/stats", timeout=5) as response:
        result: dict[str, Any] = json.load(response)
        return result


def clear(url: str) -> None:
    request = urllib.request.Request(f"{url}/_sandbox/messages", method="DELETE")
    urllib.request.urlopen(request, timeout=5).close()


class _RequestsTransport(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no types
    """The SDK's default transport (requests), pointed at the local server."""

    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=10)
        self.base_url = base_url
        # The fastest this transport goes against a local server: without this, requests
        # rescans proxy variables and the CA bundle on every call.
        self.session.trust_env = False

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = urllib.parse.urlsplit(url).path
        return super().request(method, self.base_url + path, *args, **kwargs)


def _loop(url: str, seconds: float, transport: str, queue: Any) -> None:
    http = (
        _RequestsTransport(url)
        if transport == "requests"
        else PooledTwilioHttpClient(timeout=10, base_url=url)
    )
    client = Client(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, environment={"X": "1"}, http_client=http)
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        client.messages.create(
            to="+447400000001",
            from_="+15005550006",
            body="Santi: a tip. Reply STOP to end",
            status_callback="https://clinic.example/webhooks/twilio/status?m=1",
        )
        sent += 1
    queue.put(sent)


def ceiling(url: str, transport: str, seconds: float = 15) -> float:
    """A bare loop of `client.messages.create` in one process per core, for `seconds`."""
    queue: Any = mp.Queue()
    workers = [
        mp.Process(target=_loop, args=(url, seconds, transport, queue)) for _ in range(CORES)
    ]
    for worker in workers:
        worker.start()
    total: int = sum(int(queue.get()) for _ in workers)
    for worker in workers:
        worker.join()
    return total / seconds


def enroll(url: str, count: int) -> None:
    now = datetime.now(UTC)
    settings = Settings(database_url=url, send_window="Mon-Sun 00:00-24:00", holiday_region="none")
    services = build(settings)
    requests = [
        EnrollmentRequest(
            campaign="leg-cramps",
            name=f"Patient {i}",
            phone=f"+4474{i:08d}",
            email=None,
            edd=(now + timedelta(days=140)).date(),
            edd_source=EddSource.SCAN,
            timezone="Europe/London",
            language="en",
            channels=frozenset({Channel.SMS}),
            consents=frozenset({ConsentPurpose.PROGRAMME}),
        )
        for i in range(count)
    ]
    for start in range(0, count, 10_000):
        enrollments.enroll_many(
            services.db,
            services.planner,
            requests[start : start + 10_000],
            now,
            source=ConsentSource.CSV,
            actor="bench",
        )
    services.close()


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its children, in kB."""
    pids = [
        pid,
        *map(
            int,
            subprocess.run(
                ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
            ).stdout.split(),
        ),
    ]
    total = 0
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def service(
    sandbox_url: str,
    messages: int,
    *,
    concurrency: int,
    processes: int,
    memory: bool = False,
    batch: int,
) -> dict[str, Any]:
    redis.Redis.from_url(REDIS).flushdb()
    clear(sandbox_url)
    with fresh_postgres("bench_send") as url, tempfile.TemporaryDirectory() as folder:
        enroll(url, messages)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGNS_")},
            "CAMPAIGNS_DATABASE_URL": url,
            "CAMPAIGNS_BROKER_URL": REDIS,
            "CAMPAIGNS_SEND_WINDOW": "Mon-Sun 00:00-24:00",
            "CAMPAIGNS_HOLIDAY_REGION": "none",
            "CAMPAIGNS_DISPATCH_INTERVAL_SECONDS": "0.5",
            "CAMPAIGNS_SEND_CONCURRENCY": str(concurrency),
            "CAMPAIGNS_SEND_BATCH_SIZE": str(batch),
            "CAMPAIGNS_SMS_PROVIDER": "twilio",
            "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN,
            "TWILIO_FROM": "+15005550006",
            "TWILIO_API_BASE_URL": sandbox_url,
        }
        log = Path(folder) / "worker.log"
        with log.open("w") as sink:
            worker = subprocess.Popen(
                [
                    str(BIN / "celery"),
                    "-A",
                    "workers.app",
                    "worker",
                    "--queues",
                    "dispatch,send.sms,send.email",
                    "--concurrency",
                    str(processes),
                    "--without-gossip",
                    "--without-mingle",
                    "--loglevel",
                    "WARNING",
                ],
                env=env,
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            beat = subprocess.Popen(
                [
                    str(BIN / "celery"),
                    "-A",
                    "workers.app",
                    "beat",
                    "--loglevel",
                    "WARNING",
                    "--schedule",
                    str(Path(folder) / "beat"),
                ],
                env=env,
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        samples: list[tuple[int, int]] = []
        started = time.monotonic()
        try:
            while True:
                count = stats(sandbox_url)["count"]
                if memory:
                    samples.append((count, rss_kb(worker.pid)))
                if count >= messages:
                    break
                if time.monotonic() - started > 1800:
                    raise RuntimeError(f"only {count} of {messages} sent in 30 minutes")
                time.sleep(1)
        finally:
            for process in (beat, worker):
                process.terminate()
                process.wait(timeout=60)
        done = stats(sandbox_url)
        if os.environ.get("BENCH_KEEP_LOG"):
            Path(os.environ["BENCH_KEEP_LOG"]).write_text(log.read_text())
    result: dict[str, Any] = {
        "messages": done["count"],
        "per_second": round(done["count"] / (done["last"] - done["first"]), 1),
    }
    if memory:
        early = [kb for count, kb in samples if count >= messages * 0.05][:5]
        result["worker_rss_mb_early"] = round(statistics.median(early) / 1024, 1)
        result["worker_rss_mb_end"] = round(samples[-1][1] / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-run", type=int, default=100_000)
    defaults = Settings.model_fields
    parser.add_argument("--concurrency", type=int, default=defaults["send_concurrency"].default)
    parser.add_argument("--batch", type=int, default=defaults["send_batch_size"].default)
    parser.add_argument("--processes", type=int, default=CORES)
    args = parser.parse_args()
    shape = {"concurrency": args.concurrency, "processes": args.processes, "batch": args.batch}
    runs: dict[str, list[float]] = {}

    def measure(name: str, value: float) -> None:
        runs.setdefault(name, []).append(round(value, 1))
        print(name, runs[name][-1], flush=True)

    for name, latency, port in (("no_latency", 0.0, 4710), ("latency_150ms", 0.15, 4711)):
        server = sandbox(port, latency)
        url = f"http://127.0.0.1:{port}"
        for _ in range(args.repeat):  # interleaved, so drifts in machine load hit both alike
            if latency == 0:
                measure("ceiling_sdk_default_transport", ceiling(url, "requests"))
            measure(f"ceiling_{name}", ceiling(url, "pooled"))
            measure(f"service_{name}", service(url, args.messages, **shape)["per_second"])
        server.terminate()
    medians = {name: statistics.median(values) for name, values in runs.items()}
    results: dict[str, Any] = {
        "cores": CORES,
        "messages_per_run": args.messages,
        "worker_processes": args.processes,
        "send_concurrency": args.concurrency,
        "send_batch_size": args.batch,
        "runs": runs,
        "medians": medians,
        "ratios": {
            "no_latency_vs_sdk_default_ceiling": round(
                medians["service_no_latency"] / medians["ceiling_sdk_default_transport"], 2
            ),
            "no_latency_vs_same_transport_ceiling": round(
                medians["service_no_latency"] / medians["ceiling_no_latency"], 2
            ),
            "latency_150ms_vs_sdk_default_no_latency_ceiling": round(
                medians["service_latency_150ms"] / medians["ceiling_sdk_default_transport"], 2
            ),
            "latency_150ms_vs_same_transport_no_latency_ceiling": round(
                medians["service_latency_150ms"] / medians["ceiling_no_latency"], 2
            ),
        },
    }
    if args.memory_run:
        server = sandbox(4712, 0.0)
        results["memory_run"] = service(
            "http://127.0.0.1:4712", args.memory_run, memory=True, **shape
        )
        server.terminate()
    print(json.dumps(results, indent=2))
    save("providers", results)


if __name__ == "__main__":
    main()
