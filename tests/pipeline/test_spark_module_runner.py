"""The runner of the pipeline's Spark jobs (landing, publish, training input): a job past its time limit is killed
with everything it started (a wedged query's JVM included), and the task fails with a clear error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from freshrec.core.settings import load_settings
from freshrec.pipeline.features.runs import LandingFailed, run_spark_module

HANGING_JOB = '''
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # stands for the job's JVM
open(sys.argv[1], "w").write(str(child.pid))
print("started", flush=True)
time.sleep(600)
'''


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" in status.read_text()  # a zombie nobody reaps here is dead all the same
    except FileNotFoundError:
        return True


def test_a_job_past_its_time_is_killed_with_its_children(tmp_path, monkeypatch):
    (tmp_path / "hanging_job.py").write_text(HANGING_JOB)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    settings = load_settings(home=tmp_path / "home", spark_job_timeout_s=3)
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(LandingFailed, match=r"hanging_job ran past spark_job_timeout_s=3 s and was killed"):
        run_spark_module(settings, "hanging_job", [str(pid_file)], LandingFailed)
    assert time.monotonic() - started < 60
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), "the job's child outlived the job"


def test_a_failing_job_raises_with_its_stderr(tmp_path):
    settings = load_settings(home=tmp_path / "home")
    with pytest.raises(LandingFailed, match="No module named"):
        run_spark_module(settings, "freshrec_no_such_job", [], LandingFailed)


def test_the_summary_is_the_last_stdout_line(tmp_path, monkeypatch):
    (tmp_path / "summary_job.py").write_text('import json, sys\nprint("progress")\nprint(json.dumps({"args": sys.argv[1:]}))\n')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    settings = load_settings(home=tmp_path / "home")
    assert run_spark_module(settings, "summary_job", ["a", "b"], LandingFailed) == {"args": ["a", "b"]}
