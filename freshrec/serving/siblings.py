"""Worker processes behind one port (``freshrec serve --workers N``) report as one replica.

Each worker applies registry changes on its own: the one that receives an admin call reconciles at
once, the others at their next poll. A release must not treat the replica as converged until every
worker has applied the change, so each worker records the generation it serves in a file of a folder
shared by the replica's workers, and ``/v1/models`` reports the lowest generation among live workers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "FRESHREC_SERVING_WORKERS_DIR"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SiblingWorkers:
    def __init__(self, folder: Path | None) -> None:
        self._folder = folder
        self._pid = os.getpid()

    @classmethod
    def from_env(cls) -> SiblingWorkers:
        value = os.environ.get(ENV)
        return cls(Path(value) if value else None)

    def record(self, generation: int) -> None:
        """Atomically publish the generation this worker now serves."""
        if self._folder is None:
            return
        self._folder.mkdir(parents=True, exist_ok=True)
        tmp = self._folder / f".{self._pid}.tmp"
        tmp.write_text(json.dumps({"pid": self._pid, "generation": generation}))
        os.replace(tmp, self._folder / f"{self._pid}.json")

    def generations(self, own: int) -> dict[int, int]:
        """pid -> generation of every live worker of this replica (this one included)."""
        seen = {self._pid: own}
        if self._folder is None or not self._folder.is_dir():
            return seen
        for path in self._folder.glob("*.json"):
            try:
                entry = json.loads(path.read_text())
                pid, generation = int(entry["pid"]), int(entry["generation"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a file being replaced: the next poll reads it
            if pid == self._pid:
                continue
            if _alive(pid):
                seen[pid] = generation
            else:
                path.unlink(missing_ok=True)  # a worker that died (uvicorn restarts it under a new pid)
        return seen
