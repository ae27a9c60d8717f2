"""Liveness files: a process touches its file while it is well, and the container's
healthcheck (`campaigns health worker|beat`) reads the file's age. A file, not a ping through
the broker: the check must not depend on Redis (a Redis outage is not a reason to restart
every worker), and it needs no remote control enabled."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


class File:
    def __init__(self, directory: Path, role: str) -> None:
        self.path = Path(directory) / f"campaigns-{role}.alive"

    def touch(self) -> None:
        try:
            self.path.touch()
        except OSError:  # a full or read-only /tmp: the healthcheck will say so
            log.warning(
                "could not touch %s",
                self.path,
                exc_info=True,
                extra={"event": "workers.liveness.could_not_touch"},
            )

    def age(self) -> float | None:
        """Seconds since the last touch; None if never touched."""
        try:
            return time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
