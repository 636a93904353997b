"""MovieLens import: the real ML-100K, hand-made files in every format, metadata, re-import, bad input."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from freshrec.core.errors import InvalidInput, NotFound
from freshrec.core.layout import Layout
from freshrec.pipeline.data.movielens import detect_format, import_movielens

# Six ratings over three UTC days (1998-01-01, 1998-01-02, 1998-01-04), two users, three items.
ROWS = [
    ("1", "10", 4.0, 883612800),
    ("2", "10", 3.5, 883612801),
    ("1", "20", 5.0, 883699200),
    ("2", "30", 1.0, 883785599),
    ("1", "30", 2.0, 883872000),
    ("2", "20", 4.5, 883958399),
]
EXPECTED_DAYS = ["ds=1998-01-01", "ds=1998-01-02", "ds=1998-01-04"]


def _stars(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _write_format(folder: Path, fmt: str) -> Path:
    """The six ratings, plus item/user metadata, as the given MovieLens release would ship them."""
    folder.mkdir(parents=True)
    if fmt == "udata":
        path = folder / "u.data"
        path.write_text("".join(f"{u}\t{i}\t{_stars(r)}\t{t}\n" for u, i, r, t in ROWS))
        flags = ["0"] * 19
        comedy = flags.copy()
        comedy[5] = "1"
        (folder / "u.item").write_bytes("".join(
            f"{i}|Caf\xe9 {i} (1995)|01-Jan-1995||http://x|{'|'.join(comedy)}\n" for i in ("10", "20", "30")
        ).encode("latin-1"))
        (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    elif fmt == "recbole":
        path = folder / "ml-tiny.inter"
        path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                        + "".join(f"{u}\t{i}\t{_stars(r)}\t{t}\n" for u, i, r, t in ROWS))
        (folder / "ml-tiny.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                             + "".join(f"{i}\tFilm {i}\t1995\tComedy Sci-Fi\n" for i in ("10", "20", "30")))
        (folder / "ml-tiny.user").write_text("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
                                             "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n")
    elif fmt == "dat":
        path = folder / "ratings.dat"
        path.write_text("".join(f"{u}::{i}::{_stars(r)}::{t}\n" for u, i, r, t in ROWS))
        (folder / "movies.dat").write_text(
            "".join(f"{i}::Star Wars: Part {i} (1977)::Action|Sci-Fi\n" for i in ("10", "20", "30"))
        )
        (folder / "users.dat").write_text("1::M::25::4::85711\n2::F::50::1::94043\n")
    else:
        path = folder / "ratings.csv"
        path.write_text("userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS))
        (folder / "movies.csv").write_text('movieId,title,genres\n10,"Heat, Part 10 (1995)",Action|Crime\n'
                                           "20,Film 20 (1996),(no genres listed)\n30,Film 30 (1997),Drama\n")
    return path


def _events(root: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(p).assign(ds=p.parent.name) for p in sorted(root.glob("ds=*/*.parquet"))]
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("fmt", ["udata", "recbole", "dat", "csv"])
def test_every_format_imports_the_same_events(tmp_path: Path, fmt: str) -> None:
    source = _write_format(tmp_path / "src", fmt)
    assert detect_format(source).fmt == fmt
    summary = import_movielens(source, tmp_path / "out")
    assert (summary.rows, summary.users, summary.items, summary.days) == (6, 2, 3, 3)
    assert (summary.first_day, summary.last_day) == (dt.date(1998, 1, 1), dt.date(1998, 1, 4))
    assert sorted(p.name for p in (tmp_path / "out").glob("ds=*")) == ["ds=1998-01-01", "ds=1998-01-02", "ds=1998-01-04"]
    events = _events(tmp_path / "out")
    assert list(events.columns[:5]) == ["user_id", "item_id", "event_type", "value", "ts"]
    assert [tuple(r) for r in events[["user_id", "item_id", "value", "ts"]].itertuples(index=False)] == ROWS
    assert (events.event_type == "rating").all()
    days = pd.to_datetime(events.ts, unit="s", utc=True).dt.strftime("ds=%Y-%m-%d")
    assert (days == events.ds).all()
    items = pd.read_parquet(tmp_path / "out" / "_meta" / "items.parquet")
    assert list(items.item_id) == ["10", "20", "30"] and items.categories.map(list).iloc[0] != []
    if fmt == "csv":
        assert items.title.iloc[0] == "Heat, Part 10 (1995)" and list(items.categories.iloc[1]) == []
        assert not (tmp_path / "out" / "_meta" / "users.parquet").exists()
    else:
        users = pd.read_parquet(tmp_path / "out" / "_meta" / "users.parquet")
        assert list(users.user_id) == ["1", "2"] and {"age", "gender", "occupation"} <= set(users.columns)
    if fmt == "udata":
        assert items.title.iloc[0] == "Caf\xe9 10 (1995)" and list(items.categories.iloc[0]) == ["Comedy"]
        assert items.year.iloc[0] == 1995
    if fmt == "dat":
        assert items.title.iloc[0] == "Star Wars: Part 10 (1977)" and list(items.categories.iloc[0]) == ["Action", "Sci-Fi"]


def test_format_is_detected_from_content_not_name(tmp_path: Path) -> None:
    source = _write_format(tmp_path / "src", "dat")
    renamed = source.rename(source.with_name("export.txt"))
    assert detect_format(renamed).fmt == "dat"
    assert import_movielens(renamed, tmp_path / "out").rows == 6


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1\t10\t4\n", "unrecognised ratings format"),
        ("1\t10\t4\t883612800\n2\t20\t3\n", "malformed udata"),
        ("1\t10\tfour\t883612800\n", "unrecognised"),
        ("1\t10\t4\t883612800\n2\t20\tfour\t883612801\n", "malformed udata"),
        ("user_id:token\titem_id:token\trating:float\n1\t10\t4\n", "lacks timestamp"),
        ("userId,movieId,rating,timestamp\n1,10,,883612800\n", "empty or missing rating"),
        ("1::Toy Story (1995)::Comedy\n", "not a ratings.dat"),
        ("", "empty"),
        ("hello world\n", "unrecognised"),
    ],
)
def test_malformed_files_fail_clearly_and_change_nothing(tmp_path: Path, content: str, message: str) -> None:
    out = tmp_path / "out"
    import_movielens(_write_format(tmp_path / "good", "udata"), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.data"
    bad.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        import_movielens(bad, out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in out.iterdir()) == ["_meta", *EXPECTED_DAYS]


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        import_movielens(tmp_path / "nope.data", tmp_path / "out")


def test_reimport_replaces_days_without_duplicates(tmp_path: Path) -> None:
    source = _write_format(tmp_path / "src", "csv")
    out = tmp_path / "out"
    import_movielens(source, out)
    (out / "ds=1998-01-01" / "stale.parquet").write_bytes(b"left over from an older import")
    import_movielens(source, out)
    events = _events(out)
    assert len(events) == 6
    assert sorted(p.name for p in (out / "ds=1998-01-01").iterdir()) == ["part-00000.parquet"]
    assert sorted(p.name for p in out.iterdir()) == ["_meta", *EXPECTED_DAYS]


@pytest.mark.slow
def test_ml100k_import(ml100k: Path, tmp_path: Path) -> None:
    summary = import_movielens(ml100k / "ml-100k.inter", tmp_path / "ml")
    assert (summary.rows, summary.users, summary.items) == (100_000, 943, 1_682)
    day_folders = sorted((tmp_path / "ml").glob("ds=*"))
    assert len(day_folders) == summary.days > 100
    events = _events(tmp_path / "ml")
    assert len(events) == 100_000 and events.user_id.nunique() == 943 and events.item_id.nunique() == 1_682
    assert events.value.between(1, 5).all() and (events.event_type == "rating").all()
    assert (pd.to_datetime(events.ts, unit="s", utc=True).dt.strftime("ds=%Y-%m-%d") == events.ds).all()
    items = pd.read_parquet(tmp_path / "ml" / "_meta" / "items.parquet")
    users = pd.read_parquet(tmp_path / "ml" / "_meta" / "users.parquet")
    assert len(items) == 1_682 and items.loc[items.item_id == "1", "title"].item() == "Toy Story"
    assert list(items.loc[items.item_id == "1", "categories"].item()) == ["Animation", "Children's", "Comedy"]
    assert len(users) == 943 and users.age.between(7, 73).all()


def test_cli_import_defaults_to_the_lake(freshrec_home: Path, tmp_path: Path) -> None:
    from freshrec.cli.data import app

    source = _write_format(tmp_path / "src", "recbole")
    result = CliRunner().invoke(app, ["import", "movielens", str(source)])
    assert result.exit_code == 0, result.output
    raw = Layout(freshrec_home).raw_events
    assert Layout(freshrec_home).raw_days() == [dt.date(1998, 1, 1), dt.date(1998, 1, 2), dt.date(1998, 1, 4)]
    assert (raw / "_meta" / "items.parquet").is_file()
    assert "6 ratings" in result.output and "2 users" in result.output and "3 days" in result.output


def test_a_release_folder_imports_its_ratings_file(tmp_path: Path) -> None:
    folder = _write_format(tmp_path / "ml-100k", "udata").parent
    assert import_movielens(folder, tmp_path / "out").rows == 6
    _write_format(tmp_path / "both", "csv")
    (tmp_path / "both" / "u.data").write_text("1\t10\t4\t883612800\n")
    with pytest.raises(InvalidInput, match="name the ratings file"):
        import_movielens(tmp_path / "both", tmp_path / "out2")
