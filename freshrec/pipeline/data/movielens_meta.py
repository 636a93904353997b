"""MovieLens item and user metadata found beside a ratings file -> ``_meta/items.parquet``, ``users.parquet``.

Items: item_id, title, categories (list of genres), year. Users: user_id plus whatever demographics
the release has (age, gender, occupation, zip_code). Sibling files by format:
  u.data       u.item (| separated, 19 genre flags), u.user
  *.inter      <stem>.item / <stem>.user (RecBole atomic files; the only *.item / *.user otherwise)
  ratings.dat  movies.dat (MovieID::Title::Genres), users.dat (UserID::Gender::Age::Occupation::Zip)
  ratings.csv  movies.csv (movieId,title,genres)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from freshrec.core.errors import InvalidInput

if TYPE_CHECKING:  # the type only: movielens.py imports this module
    from freshrec.pipeline.data.movielens import RatingsFile

# ML-100K u.item genre flag columns, in file order (u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_FIXED_NAMES = {"udata": ("u.item", "u.user"), "dat": ("movies.dat", "users.dat"), "csv": ("movies.csv", None)}
_YEAR = r"\((\d{4})\)\s*$"


def metadata_files(ratings: RatingsFile) -> dict[str, Path]:
    """{"items": path, "users": path} for the sibling metadata files that exist."""
    folder = ratings.path.parent
    if ratings.fmt == "recbole":
        found = {}
        for kind, suffix in (("items", ".item"), ("users", ".user")):
            own = ratings.path.with_suffix(suffix)
            others = sorted(folder.glob(f"*{suffix}"))
            if own.is_file():
                found[kind] = own
            elif len(others) == 1:
                found[kind] = others[0]
        return found
    items_name, users_name = _FIXED_NAMES[ratings.fmt]
    candidates = {"items": items_name, "users": users_name}
    return {kind: folder / name for kind, name in candidates.items() if name and (folder / name).is_file()}


def copy_metadata(ratings: RatingsFile, next_to: Path) -> list[Path]:
    """Copy the sibling metadata files beside another ratings file of the same format (the split's output)."""
    copied = []
    for source in metadata_files(ratings).values():
        name = Path(next_to).with_suffix(source.suffix).name if ratings.fmt == "recbole" else source.name
        target = Path(next_to).parent / name
        if target.resolve() != source.resolve():
            shutil.copyfile(source, target)
            copied.append(target)
    return copied


def write_metadata(ratings: RatingsFile, meta_dir: Path) -> list[Path]:
    """Parse and write whatever metadata sits beside the ratings file; returns the files written."""
    written = []
    for kind, source in metadata_files(ratings).items():
        reader = _ITEM_READERS[ratings.fmt] if kind == "items" else _USER_READERS[ratings.fmt]
        try:
            frame = reader(source)
        except (ValueError, KeyError, pd.errors.ParserError) as exc:
            raise InvalidInput(f"{source}: cannot read MovieLens {kind} metadata: {exc}") from None
        meta_dir.mkdir(parents=True, exist_ok=True)
        target = meta_dir / f"{kind}.parquet"
        partial = meta_dir / f".{kind}.parquet.tmp"
        pq.write_table(_to_arrow(frame), partial)
        partial.replace(target)
        written.append(target)
    return written


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if "categories" in frame:  # explicit type: an all-empty column would otherwise be list<null>
        index = table.schema.get_field_index("categories")
        table = table.set_column(index, "categories", pa.array(frame["categories"].tolist(), pa.list_(pa.string())))
    return table


def _items_u_item(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, sep="|", header=None, encoding=_encoding(path), dtype=str, keep_default_na=False)
    if raw.shape[1] != 5 + len(ML100K_GENRES):
        raise ValueError(f"expected {5 + len(ML100K_GENRES)} '|' fields, found {raw.shape[1]}")
    flags = raw.iloc[:, 5:].to_numpy() == "1"
    return _items(raw[0], raw[1], [[g for g, on in zip(ML100K_GENRES, row, strict=True) if on] for row in flags])


def _items_recbole(path: Path) -> pd.DataFrame:
    raw = _read_recbole(path)
    title = next((c for c in raw.columns if "title" in c), None)
    genre = next((c for c in raw.columns if c in ("class", "genre")), None)
    if "item_id" not in raw or title is None:
        raise ValueError(f"RecBole item file needs item_id and a title column, has {list(raw.columns)}")
    categories = [g.split() for g in raw[genre]] if genre else [[] for _ in range(len(raw))]
    frame = _items(raw["item_id"], raw[title], categories)
    year = next((c for c in raw.columns if "year" in c), None)
    if year:
        frame["year"] = pd.to_numeric(raw[year], errors="coerce").astype("Int64")
    return frame


def _items_movies_dat(path: Path) -> pd.DataFrame:
    raw = _read_double_colon(path, ["item_id", "title", "genres"])
    return _items(raw["item_id"], raw["title"], [_pipe_genres(g) for g in raw["genres"]])


def _items_movies_csv(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=_encoding(path))
    raw.columns = [c.lower() for c in raw.columns]
    return _items(raw["movieid"], raw["title"], [_pipe_genres(g) for g in raw["genres"]])


def _items(ids: pd.Series, titles: pd.Series, categories: list[list[str]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"item_id": ids.astype(str).str.strip(), "title": titles.astype(str).str.strip(), "categories": categories}
    )
    frame["year"] = pd.to_numeric(frame["title"].str.extract(_YEAR)[0], errors="coerce").astype("Int64")
    return frame


def _users_u_user(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, sep="|", header=None, dtype=str, keep_default_na=False, encoding=_encoding(path),
                      names=["user_id", "age", "gender", "occupation", "zip_code"])
    return _users(raw)


def _users_recbole(path: Path) -> pd.DataFrame:
    raw = _read_recbole(path)
    if "user_id" not in raw:
        raise ValueError(f"RecBole user file needs a user_id column, has {list(raw.columns)}")
    return _users(raw)


def _users_dat(path: Path) -> pd.DataFrame:
    return _users(_read_double_colon(path, ["user_id", "gender", "age", "occupation", "zip_code"]))


def _users(raw: pd.DataFrame) -> pd.DataFrame:
    frame = raw.copy()
    frame["user_id"] = frame["user_id"].astype(str).str.strip()
    if "age" in frame:
        frame["age"] = pd.to_numeric(frame["age"], errors="coerce").astype("Int64")
    return frame


def _read_recbole(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding=_encoding(path), quoting=3)
    raw.columns = [c.split(":", 1)[0] for c in raw.columns]
    return raw


def _read_double_colon(path: Path, names: list[str]) -> pd.DataFrame:
    # Titles contain single colons, so split on the two-character separator (python engine; files are small).
    return pd.read_csv(path, sep="::", engine="python", header=None, names=names, dtype=str, keep_default_na=False,
                       encoding=_encoding(path))


def _encoding(path: Path) -> str:
    """UTF-8 when the file decodes as such, else Latin-1 (the ML-100K and ML-1M files)."""
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def _pipe_genres(text: str) -> list[str]:
    return [] if text in ("", "(no genres listed)") else text.split("|")


_ITEM_READERS = {"udata": _items_u_item, "recbole": _items_recbole, "dat": _items_movies_dat, "csv": _items_movies_csv}
_USER_READERS = {"udata": _users_u_user, "recbole": _users_recbole, "dat": _users_dat}
