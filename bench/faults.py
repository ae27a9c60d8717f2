"""The fault suite at scale: 10,000 messages a fault, production batches, concurrency and
timeouts, shared rate limits and provider latency.

    .venv/bin/python -m bench.faults [--patients 5000] [--latency-ms 120] [--rate 150]
                                     [--only "provider 5xx"]

The same stack, faults and measurements as tests/faults (see tests/faults/stack.py): the
docker-compose.yml commands for web (2 processes), worker (2 processes, 200 send threads each)
and beat, on PostgreSQL, a Redis of its own and both sandboxes. Each fault hits a fresh cohort
(SMS and email welcome for every patient) while it is being sent, with STOP / loss texts, staff
pauses and ordinary texts meanwhile. Results: bench/results/faults.json, and the table in
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

from bench.common import save
from tests.faults.stack import FAULTS, Run, Shape, Stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=5000, help="per fault (2 messages each)")
    parser.add_argument("--latency-ms", type=int, default=120)
    parser.add_argument("--rate", type=float, default=150, help="messages/s per provider")
    parser.add_argument("--reconcile-after", type=int, default=30)
    parser.add_argument("--only", action="append", help="run only this fault (repeatable)")
    args = parser.parse_args()
    shape = Shape(
        latency=args.latency_ms / 1000,
        sms_rate=args.rate,
        email_rate=args.rate,
        batch=200,
        concurrency=200,
        worker_processes=2,
        web_processes=2,
        provider_timeout=10.0,
        lease=30,
        claim_timeout=60,
        reconcile_after=args.reconcile_after,
        upkeep_interval=10.0,
        dispatch_interval=2.0,
    )
    chosen = args.only or list(FAULTS)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        stack = Stack(Path(tmp), shape)
        stack.start()
        try:
            for name in chosen:
                run = Run(stack, name, args.patients, cancels=30)
                result = run.go(partial(FAULTS[name], stack), settle_timeout=900)
                row = {**result.row(), "problems": result.problems[:20]}
                results.append(row)
                print(row, flush=True)
        finally:
            restarts = list(stack.restarts)
            stack.stop()
    print(
        save(
            "faults",
            {
                "patients_per_fault": args.patients,
                "latency_ms": args.latency_ms,
                "rate_per_provider": args.rate,
                "reconcile_after_seconds": args.reconcile_after,
                "restarts_by_supervisor": restarts,
                "runs": results,
            },
        )
    )


if __name__ == "__main__":
    main()
