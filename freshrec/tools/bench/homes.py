"""Scratch homes for benchmarks: a registry version's bundle and the live snapshot, served on their own."""

from __future__ import annotations

import shutil
from pathlib import Path

from freshrec.core.errors import NotFound
from freshrec.core.layout import Layout
from freshrec.core.registry import open_registry
from freshrec.core.settings import Settings, load_settings
from freshrec.pipeline.export.edge import pick_version
from freshrec.serving.snapshot import current_snapshot_name


def copy_version(settings: Settings, home: Path, version: str | None, actor: str) -> Settings:
    """``version``'s bundle (the champion's when None: top-level files and those its SHA256SUMS lists) and the
    live snapshot of ``settings.home``, registered and promoted in ``home``; the settings of ``home``."""
    view = pick_version(settings, version)
    source = Path(view.bundle_dir)
    bundle = home / "models" / source.name
    bundle.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file():
            shutil.copy2(path, bundle / path.name)
    sums = source / "SHA256SUMS"  # files in subfolders it lists (a pruned student's export checkpoint) too
    for listed in (line.split("  ", 1)[1] for line in (sums.read_text().splitlines() if sums.is_file() else [])):
        if not (bundle / listed).exists():
            (bundle / listed).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / listed, bundle / listed)
    online = Layout(settings.home).online
    name = current_snapshot_name(online)
    if name is None:
        raise NotFound("the home has no online snapshot; run the pipeline first (make up or freshrec pipeline run)")
    target_online = Layout(home).online
    shutil.copytree(online / name, target_online / name)
    (target_online / "CURRENT").write_text(name)
    scratch_settings = load_settings(home=home)
    registry = open_registry(scratch_settings)
    try:
        artifacts = {variant: bundle / Path(a.uri).name for variant, a in view.artifacts.items()}
        # the scratch registry holds this version alone: its parent is not there to point at
        lineage = {k: v for k, v in dict(view.lineage).items() if k != "parent_version"}
        copy = registry.register_candidate(bundle, artifacts, dict(view.metrics), lineage, actor=actor)
        registry.promote(copy.version, actor=actor, reason=f"copy of version {view.version}")
    finally:
        registry.close()
    return scratch_settings
