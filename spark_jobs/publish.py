"""Atomic publication of a staged run into the lake (plain file operations, no Spark).

Every published partition (``features/ds=D``, ``clean/events/ds=E/landed=L``, ``quarantine/ds=L``) is a
relative symlink to an immutable version directory under ``_versions/``. A new version is fully written
first, then the link is swapped with ``os.replace`` (atomic on POSIX): readers see the old partition or
the new one, never half of either, and a crash before the swap leaves the previous state untouched.
Runnable as ``python -m spark_jobs.publish --home H --staging DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from freshrec.layout import Layout
from freshrec.settings import load_settings

VERSIONS = "_versions"
RUN_FILE = "run.json"


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
        target = layout.online / snapshot
        if target.exists():
            shutil.rmtree(target)
        (staging / "online").rename(target)
        write_text_atomic(layout.online / "CURRENT", snapshot + "\n")
        _prune_snapshots(layout.online, keep={snapshot}, keep_last=3)
    shutil.rmtree(staging, ignore_errors=True)
    return run


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
    print(json.dumps({"published_days": run["days"], "snapshot": run.get("snapshot")}))


if __name__ == "__main__":
    main()
