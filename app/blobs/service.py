"""When stored bytes may go: the one owner of every blob's lifetime.

Models, datasets and artifacts share content-addressed blobs (the same bytes, uploaded twice or
re-uploaded from a job's artifact, are one file). So no domain deletes a blob itself: a delete
removes its row, and after the transaction commits, `release_after_commit` removes the blob only
when no row of any kind, of any tenant, still refers to it. `collect_garbage` (the scheduler's
housekeeping) removes what that missed and what no row ever referred to: the blob of a publish
that lost its compare-and-set, the scratch of a killed upload or job attempt. `scrub` re-hashes
every blob and quarantines one whose bytes no longer match its name, so it is never served.

Both honour a grace period: `Storage.put` touches a blob it finds already stored, so a row about
to be committed for it (an upload, an artifact) is never beaten by a collector that saw no row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from app.blobs import repository
from app.core.config import Settings
from app.core.storage import Storage, newest_mtime

log = logging.getLogger(__name__)
_RELEASED = "modelpress_released_blobs"


def release_after_commit(session: Session, storage: Storage, key: str, grace: float) -> None:
    """Delete the blob once this session commits, if nothing then refers to it.

    A rollback keeps it (the row that refers to it is back). A blob younger than `grace` is
    left to the collector: an upload of the same bytes may be about to commit a row for it.
    """
    session.info.setdefault(_RELEASED, []).append((storage, key, grace))


@event.listens_for(Session, "after_commit")
def _release(session: Session) -> None:
    released = session.info.pop(_RELEASED, [])
    if not released:
        return
    fresh = sessionmaker(bind=session.get_bind())
    for storage, key, grace in released:
        try:
            with fresh() as check:
                delete_if_unreferenced(check, storage, key, grace)
        except Exception:
            log.exception("blob release failed; the collector will retry", extra={"key": key})


@event.listens_for(Session, "after_rollback")
def _keep(session: Session) -> None:
    session.info.pop(_RELEASED, None)


def delete_if_unreferenced(session: Session, storage: Storage, key: str, grace: float) -> bool:
    """Remove the blob if no row refers to it and it is older than `grace`; True if removed."""
    age = storage.age_seconds(key)
    if age is None or age < grace or repository.is_referenced(session, key):
        return False
    storage.delete(key)
    log.info("blob removed", extra={"key": key})
    return True


@dataclass
class Collected:
    """What one garbage-collection round removed."""

    blobs: list[str] = field(default_factory=list)
    scratch: list[str] = field(default_factory=list)


def collect_garbage(session: Session, storage: Storage, settings: Settings) -> Collected:
    """Remove unreferenced blobs and abandoned scratch older than the grace period."""
    grace, done = settings.blob_grace_seconds, Collected()
    referenced = repository.referenced_keys(session)
    for key in storage.blob_keys():
        if key not in referenced and delete_if_unreferenced(session, storage, key, grace):
            done.blobs.append(key)
    active = repository.active_scratch_prefixes(session)
    now = time.time()
    for path in storage.scratch_dirs():
        if any(path.name.startswith(prefix + "-") for prefix in active):
            continue
        try:
            idle = now - newest_mtime(path)
        except FileNotFoundError:
            continue
        if idle >= grace:
            storage.remove_tree(path)
            done.scratch.append(path.name)
    if done.blobs or done.scratch:
        log.info("garbage collected", extra={"blobs": len(done.blobs), "scratch": done.scratch})
    return done


def scrub(storage: Storage) -> list[str]:
    """Re-hash every blob; quarantine (and return) those whose bytes no longer match."""
    corrupt = []
    for key in storage.blob_keys():
        digest = storage.hash_of(key)  # streamed, from disk or object storage
        if digest is None:
            continue
        if digest != key.rsplit("/", 1)[-1]:
            storage.quarantine(key)
            corrupt.append(key)
            log.error("blob failed its scrub and was quarantined", extra={"key": key})
    return corrupt
