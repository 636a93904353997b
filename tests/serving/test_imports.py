"""freshrec.serving must not pull in torch, pyspark or airflow (a replica stays small and starts fast); the static
rule is an import-linter contract (tests/architecture), this checks what a started app really loads."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torch", "pyspark", "airflow")


def test_serving_imports_no_heavy_planes() -> None:
    code = (
        "import json, sys\n"
        "import freshrec.serving.api, freshrec.serving.gpu, freshrec.serving.execution, freshrec.serving.reconciler, freshrec.cli.serve\n"
        "freshrec.serving.api.create_app()\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
