"""The MS Recommenders stratified split and the ``freshrec data split msr`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from freshrec.core.errors import InvalidInput
from freshrec.pipeline.data.movielens import detect_format, import_movielens, read_ratings, write_ratings
from freshrec.pipeline.data.split import stratified_split


def _reference_split(data: pd.DataFrame, ratio: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The recipe of recommenders' _do_stratification(is_random=True, filter_by="item"), in pandas.

    Written independently here (global np.random seed, sort_values, groupby cumcount, round of the
    count) so the vectorised implementation is checked against the documented steps, not against itself.
    """
    data = data.copy()
    data["item_key"] = pd.to_numeric(data["item_id"])
    np.random.seed(seed)
    data["random"] = np.random.rand(data.shape[0])
    data = data.sort_values(["item_key", "random"])
    groups = data.groupby("item_key")
    rank = groups.cumcount() + 1
    cut = (ratio * groups["item_key"].transform("count")).round()
    keep = list(data.columns[:4])
    return data[rank <= cut][keep], data[rank > cut][keep]


def _toy(n: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": rng.integers(1, 40, n).astype(str),
        "item_id": rng.zipf(1.6, n).clip(max=60).astype(str),
        "rating": rng.integers(1, 6, n).astype(float),
        "timestamp": rng.integers(8.8e8, 8.9e8, n),
    })


def test_matches_the_reference_recipe_row_for_row() -> None:
    data = _toy()
    for ratio, seed in ((0.75, 42), (0.5, 7)):
        train, test = stratified_split(data, ratio=ratio, seed=seed)
        ref_train, ref_test = _reference_split(data, ratio, seed)
        pd.testing.assert_frame_equal(train, ref_train)
        pd.testing.assert_frame_equal(test, ref_test)


def test_partitions_every_item_by_ratio_and_leaves_the_input_alone() -> None:
    data = _toy()
    snapshot = data.copy()
    train, test = stratified_split(data, ratio=0.75, seed=42)
    pd.testing.assert_frame_equal(data, snapshot)
    assert sorted(train.index.tolist() + test.index.tolist()) == list(range(len(data)))
    sizes = data.item_id.value_counts()
    train_sizes = train.item_id.value_counts().reindex(sizes.index, fill_value=0)
    # round half to even: 1 -> 1 (0.75), 2 -> 2 (1.5), 6 -> 4 (4.5), 10 -> 8 (7.5)
    assert (train_sizes == np.round(0.75 * sizes).astype(int)).all()
    other = stratified_split(data, ratio=0.75, seed=43)[0]
    assert set(other.index) != set(train.index)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidInput):
        stratified_split(_toy(), ratio=1.5)
    with pytest.raises(InvalidInput):
        stratified_split(_toy().drop(columns="item_id"))


@pytest.mark.slow
def test_matches_the_released_recommenders_package(ml100k: Path) -> None:
    from tests.helpers.recommenders_ref import load_python_stratified_split

    python_stratified_split = load_python_stratified_split()

    _, data = read_ratings(ml100k / "ml-100k.inter")
    # recommenders loads MovieLens with integer ids (userID, itemID), in file order.
    theirs_in = data.rename(columns={"user_id": "userID", "item_id": "itemID"}).astype({"userID": int, "itemID": int})
    their_train, their_test = python_stratified_split(theirs_in, ratio=0.75, filter_by="item", seed=42)
    train, test = stratified_split(data, ratio=0.75, filter_by="item", seed=42)
    assert (len(train), len(test)) == (len(their_train), len(their_test)) == (75_066, 24_934)
    assert train.index.tolist() == their_train.index.tolist()
    assert test.index.tolist() == their_test.index.tolist()


@pytest.mark.slow
def test_ml100k_split_matches_the_reference_and_reimports(ml100k: Path, tmp_path: Path) -> None:
    from freshrec.cli.data import app

    ratings, data = read_ratings(ml100k / "ml-100k.inter")
    train, test = stratified_split(data, ratio=0.75, seed=42)
    ref_train, _ = _reference_split(data, 0.75, 42)
    pd.testing.assert_frame_equal(train, ref_train)
    assert len(train) + len(test) == 100_000 and set(test.item_id) <= set(data.item_id)

    train_path, test_path = tmp_path / "split" / "train.inter", tmp_path / "split" / "test.inter"
    result = CliRunner().invoke(app, ["split", "msr", str(ml100k / "ml-100k.inter"), "--train-out", str(train_path),
                                      "--test-out", str(test_path)])
    assert result.exit_code == 0, result.output
    assert detect_format(train_path).fmt == "recbole"
    reread = read_ratings(train_path)[1]
    pd.testing.assert_frame_equal(reread, train.reset_index(drop=True))
    assert len(read_ratings(test_path)[1]) == len(test)
    summary = import_movielens(train_path, tmp_path / "lake")
    assert summary.rows == len(train) and len(summary.metadata) == 2


@pytest.mark.parametrize("fmt", ["udata", "recbole", "dat", "csv"])
def test_write_ratings_round_trips_each_format(tmp_path: Path, fmt: str) -> None:
    data = _toy(30).assign(rating=lambda f: f.rating - 0.5 * (f.index % 2))  # whole and half stars
    like = {"udata": "u.data", "recbole": "x.inter", "dat": "ratings.dat", "csv": "ratings.csv"}[fmt]
    original = tmp_path / "orig" / like
    write_ratings(data, original, like=_fake_like(fmt, original))
    ratings, back = read_ratings(original)
    assert ratings.fmt == fmt
    pd.testing.assert_frame_equal(back, data)


def _fake_like(fmt: str, path: Path):
    from freshrec.pipeline.data.movielens import RatingsFile

    return RatingsFile(path, fmt, (), None)
