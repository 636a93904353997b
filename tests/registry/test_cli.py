"""`freshrec registry ...`: JSON output parses; conflicts and unknown versions exit non-zero."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freshrec.cli.registry import app
from freshrec.core.errors import Conflict, InvalidInput, NotFound
from freshrec.core.registry import open_registry
from freshrec.core.settings import get_settings
from tests.registry.conftest import artifact_specs

runner = CliRunner()


@pytest.fixture
def two_versions(freshrec_home: Path, bundle: Path) -> tuple[int, int]:
    with open_registry(get_settings()) as registry:
        first = registry.register_candidate(bundle, artifact_specs(bundle), {"ndcg@10": 0.4}, {"code_version": "a"}, {}, "t")
        second = registry.register_candidate(bundle, artifact_specs(bundle), {"ndcg@10": 0.5}, {}, {}, "t")
        registry.promote(first.version, "t", "first")
        registry.record_verdict(first.version, {"verdict": "pass"}, "release")
    return first.version, second.version


def _json(*args: str) -> object:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_and_show_json(two_versions: tuple[int, int]) -> None:
    first, second = two_versions
    listed = _json("list")
    assert [(row["version"], row["state"]) for row in listed] == [(str(first), "champion"), (str(second), "candidate")]
    shown = _json("show", str(first))
    assert shown["state"] == "champion" and shown["aliases"] == ["champion"]
    assert {"artifacts", "metrics", "lineage", "verdicts", "reasons", "audit"} <= set(shown)
    assert shown["metrics"]["ndcg@10"] == 0.4 and shown["lineage"]["code_version"] == "a"
    assert shown["verdicts"][0]["outcome"] == "pass"
    assert [entry["action"] for entry in shown["audit"]] == ["register", "promote", "verdict"]


def test_list_table_shows_gate_metrics_whole_off_a_terminal(two_versions: tuple[int, int]) -> None:
    result = runner.invoke(app, ["list"])  # CliRunner's stdout is not a terminal, like a pipe or a CI log
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "version" in line and "ndcg@10" in line)
    assert "recall@10" in header and "created (UTC)" in header
    assert "0.4000" in result.stdout and "0.5000" in result.stdout and "champion" in result.stdout
    assert "…" not in result.stdout, result.stdout  # nothing cut to fit 80 columns


def test_promote_and_rollback_record_actor_and_reason(two_versions: tuple[int, int]) -> None:
    first, second = two_versions
    promoted = _json("promote", str(second), "--reason", "better offline", "--actor", "carol")
    assert promoted["state"] == "champion"
    state = _json("rollback", "--reason", "bad online")
    assert state["champion"] == str(first) and state["previous"] is None
    audit = _json("show", str(second))["audit"]
    assert (audit[-2]["actor"], audit[-2]["reason"]) == ("carol", "better offline")
    assert audit[-1]["reason"] == "bad online" and audit[-1]["actor"]
    assert "registry (generation" in runner.invoke(app, ["list"]).stdout


def test_errors_exit_non_zero_with_a_message(two_versions: tuple[int, int], freshrec_home: Path) -> None:
    first, _ = two_versions
    for args, error, code in [(["promote", str(first)], Conflict, 4), (["show", "seven"], InvalidInput, 2)]:
        result = runner.invoke(app, args)
        assert isinstance(result.exception, error) and result.exception.exit_code == code, args
    # Through the real console entry point: the root turns the error into a message and an exit code.
    done = subprocess.run(
        [sys.executable, "-c", "from freshrec.cli import main; main()", "registry", "promote", "99"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == NotFound.exit_code, (done.stdout, done.stderr)
    assert "version 99" in done.stderr and "does not exist" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["registry", "promote"], "Missing argument 'version'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["pipeline", "run", "--bogus"], "No such option: --bogus"),
])
def test_usage_errors_are_one_line_plus_usage_and_exit_2(freshrec_home: Path, args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-c", "from freshrec.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr and "Usage: freshrec" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 5, done.stderr


def test_migrate_command_round_trip(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    up = runner.invoke(app, ["migrate", "--url", url])
    assert up.exit_code == 0 and "empty -> 0001_initial" in up.stdout, up.output
    down = runner.invoke(app, ["migrate", "--url", url, "--downgrade", "base"])
    assert down.exit_code == 0 and "0001_initial -> empty" in down.stdout, down.output
