"""Atomic publication of a staged run into the lake (plain file operations, no Spark).

Every published partition (``features/ds=D``, ``clean/events/ds=E/landed=L``, ``quarantine/ds=L``) is a
relative symlink to an immutable version directory under ``_versions/``. A new version is fully written
first, then the link is swapped with ``os.replace`` (atomic on POSIX): readers see the old partition or
the new one, never half of either, and a crash before the swap leaves the previous state untouched.

The online snapshot is published beside the others and made live (``CURRENT``) only when it is as of the live
one's day or later: a backfill of past days must never turn serving back in time (the live tail only holds
what came after the live snapshot's log position).
Runnable as ``python -m freshrec.spark.publish --home H --staging DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

from freshrec.core.events import Watermark
from freshrec.core.layout import Layout
from freshrec.core.settings import load_settings

log = logging.getLogger("freshrec.spark.publish")

VERSIONS = "_versions"
RUN_FILE = "run.json"
CURRENT = "CURRENT"


def swap_link(link: Path, target: Path) -> Path | None:
    """Point ``link`` at ``target`` atomically; return the version it pointed to before (if any)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    previous: Path | None = None
    if link.is_symlink():
        previous = (link.parent / os.readlink(link)).resolve()
    elif link.exists():
        # A plain directory (written by hand or an old layout): park it as a version so the swap stays atomic.
        parked = link.parent / VERSIONS / link.name / "legacy"
        parked.parent.mkdir(parents=True, exist_ok=True)
        link.rename(parked)
        previous = parked
    tmp = link.parent / f".{link.name}.swap-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(target, link.parent))
    os.replace(tmp, link)
    return previous


def install_version(staged: Path, partition_link: Path, run_id: str) -> None:
    """Move a staged directory into ``_versions`` beside the partition, swap the link, drop the old version."""
    version = partition_link.parent / VERSIONS / partition_link.name / run_id
    version.parent.mkdir(parents=True, exist_ok=True)
    if version.exists():
        shutil.rmtree(version)
    staged.rename(version)
    previous = swap_link(partition_link, version)
    if previous is not None and previous != version.resolve() and previous.exists():
        shutil.rmtree(previous, ignore_errors=True)


def _unpublish(partition_link: Path) -> None:
    if partition_link.is_symlink():
        target = (partition_link.parent / os.readlink(partition_link)).resolve()
        partition_link.unlink()
        shutil.rmtree(target, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def publish_run(layout: Layout, staging: Path) -> dict:
    """Publish everything a features run staged; returns the run description (``run.json``)."""
    run = json.loads((staging / RUN_FILE).read_text())
    run_id = run["run_id"]
    landed_days = set(run["landed_days"])
    # Clean events: swap in every (event day, landing day) partition, then drop the ones of the covered
    # landing days this run no longer produces (swap first, so a crash never loses a live partition).
    fresh = set()
    for staged in sorted((staging / "clean").glob("ds=*/landed=*")):
        link = layout.clean_events / staged.parent.name / staged.name
        install_version(staged, link, run_id)
        fresh.add(link)
    for old in layout.clean_events.glob("ds=*/landed=*"):
        if old.name.removeprefix("landed=") in landed_days and old not in fresh:
            _unpublish(old)
    for day in sorted(landed_days):
        staged = staging / "quarantine" / f"ds={day}"
        if staged.is_dir():
            install_version(staged, layout.quarantine / f"ds={day}", run_id)
        else:
            _unpublish(layout.quarantine / f"ds={day}")
    for day in run["days"]:
        staged = staging / "features" / f"ds={day}"
        install_version(staged, layout.features / f"ds={day}", run_id)
    snapshot = run.get("snapshot")
    if snapshot:
        layout.online.mkdir(parents=True, exist_ok=True)
        live, reason = goes_live(layout.online, run["as_of"])
        target = layout.online / snapshot
        if target.exists():
            shutil.rmtree(target)
        (staging / "online").rename(target)
        keep = {snapshot}
        if live:
            write_text_atomic(layout.online / CURRENT, snapshot + "\n")
        else:
            keep.add((layout.online / CURRENT).read_text().strip())
            log.warning("snapshot %s published but not made live: %s", snapshot, reason)
        run.update(snapshot_live=live, snapshot_reason=reason)
        _prune_snapshots(layout.online, keep=keep, keep_last=3)
    shutil.rmtree(staging, ignore_errors=True)
    return run


def goes_live(online: Path, as_of: str) -> tuple[bool, str]:
    """Whether a snapshot as of ``as_of`` may replace the live one, and why (or why not)."""
    current = online / CURRENT
    if not current.is_file():
        return True, "no live snapshot"
    live = current.read_text().strip()
    live_as_of = Watermark.read(online / live).as_of
    if live_as_of is None:
        return True, f"the live snapshot {live} records no watermark (written before snapshots had one)"
    if as_of >= live_as_of:
        return True, f"as of {as_of}, the live snapshot {live} as of {live_as_of}"
    return False, f"as of {as_of}, older than the live snapshot {live} as of {live_as_of}"


def _prune_snapshots(online: Path, keep: set[str], keep_last: int) -> None:
    snapshots = sorted(p for p in online.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    for old in snapshots[:-keep_last]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Publish a staged features run atomically")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--staging", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = load_settings(**({"home": args.home} if args.home else {}))
    run = publish_run(Layout(settings.home), args.staging)
    print(json.dumps({"published_days": run["days"], "snapshot": run.get("snapshot"),
                      "snapshot_live": run.get("snapshot_live"), "snapshot_reason": run.get("snapshot_reason")}))


if __name__ == "__main__":
    main()
