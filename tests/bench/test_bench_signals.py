"""``freshrec bench signals``: binary vs signal-weighted wide layer, held out, on a small world and ratings file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.ratings import write_u_data

pytestmark = pytest.mark.slow


def test_signals_bench_compares_both_grams_on_held_out_data(tmp_path: Path) -> None:
    from freshrec.core.settings import load_settings
    from freshrec.tools.bench.signals import run

    world = {"days": 5, "users": 150, "items": 80, "events_per_day": 1500, "seed": 3}
    path = run(load_settings(home=tmp_path / "home"), write_u_data(tmp_path / "ml"), world=world)
    report = json.loads(path.read_text())
    assert path.with_suffix(".png").is_file()
    assert len(report["datasets"]) == 2
    for result in report["datasets"].values():
        binary, weighted = result["arms"]["binary"], result["arms"]["signal_weighted"]
        assert not binary["config"]["signal_weighting"] and weighted["config"]["signal_weighting"]
        assert 0.0 < binary["ndcg@10"] <= 1.0 and 0.0 < weighted["ndcg@10"] <= 1.0
        assert result["weighted_vs_binary"]["users"] == result["counts"]["test_users"] > 0
        assert {t["signal_weighting"] for t in result["trials"]} == {False, True}
        chosen = max(result["trials"], key=lambda t: t["val_ndcg@10"])
        assert result["retrain_would_choose"] == ("signal_weighted" if chosen["signal_weighting"] else "binary")


def test_signals_bench_refuses_data_without_event_types(tmp_path: Path) -> None:
    import pandas as pd

    from freshrec.core.errors import InvalidInput
    from freshrec.core.settings import load_settings
    from freshrec.pipeline.training.dataset import normalise_interactions
    from freshrec.tools.bench.signals import _prepared, compare

    rows = [(f"u{u}", f"i{(u * 7 + k) % 30}", 1_700_000_000 + 86_400 * (k % 6) + u) for u in range(40) for k in range(12)]
    bare = normalise_interactions(pd.DataFrame(rows, columns=["user_id", "item_id", "ts"]))
    with pytest.raises(InvalidInput, match="no event types"):
        compare(_prepared(load_settings(home=tmp_path), bare, "temporal"))
