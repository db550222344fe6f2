"""Attempt leases: only the newest attempt of a step may commit, and a step whose task died stops.

``runs/<pipeline>/<run>/steps/<step>/lease.json`` = ``{"attempt": N, "token": hex, "beat": K, "claimed": iso}``

- The step operator claims the lease when an attempt is about to RUN the step (after a cache miss): a
  compare-and-swap that refuses if a newer attempt holds it already (the caller is then stale). While the
  step runs, the operator ``beat``s every ``heartbeat`` seconds (``beat`` += 1, compare-and-swap on the token).
- Inside the step process, ``LeaseWatch`` reads the lease every ``interval`` seconds. The step is stopped,
  without committing anything, when the token is no longer its own (a newer attempt started) or when the beat
  has not moved for ``ttl`` seconds of the step's own monotonic clock (its task process is gone and nobody
  watches it: a killed worker, a lost machine). Clocks of the two sides are never compared.
- ``check`` runs right before every output manifest is written, so a stale attempt cannot commit after a
  newer one has claimed the step; the operator checks again before it writes the cache entry.

Standard library only: shipped with the step runtime (``runtime/bundle.py``). The datastore is duck-typed
(``get_json_with_etag``, ``put_json_if``, ``get_json_or_none``).
"""

from __future__ import annotations

import datetime
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from airflow_mlpipe.errors import ConflictError

HEARTBEAT_ENV = "MLPIPE_LEASE_HEARTBEAT"  # seconds between two beats of the operator (default 10)
TTL_ENV = "MLPIPE_LEASE_TTL"  # seconds without a beat after which a step stops itself (default 60)
DEFAULT_HEARTBEAT = 10.0
DEFAULT_TTL = 60.0


class LeaseLost(ConflictError):
    """This attempt no longer owns its step: a newer attempt claimed it, or its task stopped beating."""


def lease_key(step_prefix: str) -> str:
    """The lease of a step: ``<run prefix>/steps/<step>/lease.json``."""
    return f"{step_prefix.rstrip('/')}/lease.json"


def settings() -> tuple[float, float]:
    """(heartbeat, ttl) in seconds, from the environment of the operator's process."""

    def read(name: str, default: float) -> float:
        raw = os.environ.get(name)
        try:
            value = float(raw) if raw else default
        except ValueError:
            value = default
        return value if value > 0 else default

    heartbeat, ttl = read(HEARTBEAT_ENV, DEFAULT_HEARTBEAT), read(TTL_ENV, DEFAULT_TTL)
    return heartbeat, max(ttl, 3 * heartbeat)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def claim(datastore: Any, key: str, attempt: int) -> dict[str, Any]:
    """Take the step's lease for ``attempt``; returns the lease document (with its token).
    Raises LeaseLost if a newer attempt holds it: this attempt is stale and must not run the step."""
    for _ in range(50):
        current = datastore.get_json_with_etag(key)
        doc, etag = current if current is not None else (None, None)
        held = doc.get("attempt") if isinstance(doc, dict) else None
        if isinstance(held, int) and held > attempt:
            raise LeaseLost(
                f"attempt {attempt} is stale: attempt {held} of this step started after it "
                f"({key}); this attempt stops without running the step"
            )
        lease = {"attempt": attempt, "token": uuid.uuid4().hex, "beat": 0, "claimed": _now()}
        if datastore.put_json_if(key, lease, etag):
            return lease
    raise ConflictError(f"the lease {key} kept changing while attempt {attempt} tried to claim it; retry the task")


def _read(datastore: Any, key: str) -> dict[str, Any] | None:
    current = datastore.get_json_with_etag(key)
    return current[0] if current is not None and isinstance(current[0], dict) else None


def check(datastore: Any, key: str, token: str) -> None:
    """Raise LeaseLost unless the lease still carries ``token``."""
    doc = _read(datastore, key)
    if doc is None or doc.get("token") != token:
        held = doc.get("attempt") if doc else None
        raise LeaseLost(
            f"this attempt no longer owns its step ({key}: now held by attempt {held}); nothing is committed"
        )


def beat(datastore: Any, key: str, token: str) -> None:
    """One heartbeat: ``beat`` += 1 if the lease still carries ``token``, else LeaseLost."""
    for _ in range(20):
        current = datastore.get_json_with_etag(key)
        doc, etag = current if current is not None else (None, None)
        if not isinstance(doc, dict) or doc.get("token") != token:
            raise LeaseLost(f"the lease {key} was taken by attempt {(doc or {}).get('attempt')}")
        if datastore.put_json_if(key, {**doc, "beat": int(doc.get("beat") or 0) + 1, "beat_at": _now()}, etag):
            return
    raise ConflictError(f"the lease {key} kept changing during a heartbeat")


class Heartbeat:
    """The operator side: beats in a daemon thread until ``stop()``; ``lost`` is set when the lease was taken
    (``on_lost`` is called once then, e.g. to stop the step). Transient write errors are retried next beat."""

    def __init__(self, datastore: Any, key: str, token: str, every: float,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.datastore, self.key, self.token, self.every = datastore, key, token, every
        self.on_lost = on_lost
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlpipe-lease-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                beat(self.datastore, self.key, self.token)
            except LeaseLost as exc:
                self.lost = str(exc)
                if self.on_lost is not None:
                    self.on_lost(self.lost)
                return
            except Exception:  # noqa: BLE001 - a failed beat is retried; the ttl is several beats long
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class LeaseWatch:
    """The step side: a daemon thread that calls ``on_lost(reason)`` once when the lease is taken by a newer
    attempt or its beat has not moved for ``ttl`` seconds (measured on this process's monotonic clock)."""

    def __init__(self, datastore: Any, lease: dict[str, Any], on_lost: Callable[[str], None]) -> None:
        self.datastore = datastore
        self.key = str(lease["key"])
        self.token = str(lease["token"])
        self.ttl = float(lease.get("ttl") or DEFAULT_TTL)
        self.interval = float(lease.get("interval") or min(5.0, self.ttl / 4))
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlpipe-lease-watch", daemon=True)

    def start(self) -> LeaseWatch:
        self._thread.start()
        return self

    def check(self) -> None:
        check(self.datastore, self.key, self.token)

    def _loop(self) -> None:
        last_beat: Any = None
        moved_at = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                doc = _read(self.datastore, self.key)
            except Exception:  # noqa: BLE001 - an unreadable lease counts as a missed beat
                doc = {"token": self.token, "beat": last_beat}
            if doc is None or doc.get("token") != self.token:
                held = doc.get("attempt") if doc else None
                self.on_lost(f"attempt {held} of this step started: this attempt is stale")
                return
            if doc.get("beat") != last_beat:
                last_beat, moved_at = doc.get("beat"), time.monotonic()
            elif time.monotonic() - moved_at > self.ttl:
                self.on_lost(f"its task stopped beating {self.ttl:g} s ago (the task process is gone)")
                return

    def stop(self) -> None:
        self._stop.set()
