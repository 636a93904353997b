"""serving/ must not pull in torch, pyspark or airflow (a replica stays small and starts fast)."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torch", "pyspark", "airflow")


def test_serving_imports_no_heavy_planes() -> None:
    code = (
        "import json, sys\n"
        "import serving.api, serving.gpu, serving.execution, serving.reconciler, freshrec.cli.serve\n"
        "serving.api.create_app()\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_serving_sources_only_import_the_core() -> None:
    import ast
    from pathlib import Path

    import serving

    allowed_project = {"freshrec", "serving"}
    project = {"freshrec", "serving", "tasks", "spark_jobs", "dags"}
    for path in Path(serving.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in FORBIDDEN, f"{path.name} imports {name}"
                if top in project:
                    assert top in allowed_project and not name.startswith("freshrec.cli"), f"{path.name} imports {name}"
