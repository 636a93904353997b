"""The DuckDB implementation of the point-in-time feature tables: the test oracle for the Spark job and
its benchmark baseline. Same definitions as ``freshrec.spark.feature_tables``, written independently in SQL
(a dense per-key day grid from first activity, window frames over the day index).

Input: clean events (user_id, item_id, event_type, value, ts timestamp, ds 'YYYY-MM-DD') as any relation
DuckDB can scan (an Arrow table, a pandas frame, or a Parquet glob).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import pandas as pd

from freshrec.core.schemas import EVENT_TYPES

EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class OracleTables:
    users: pd.DataFrame
    items: pd.DataFrame
    sequences: pd.DataFrame  # user_id, history, seen (the online snapshot's lists)


def _day(day: dt.date) -> int:
    return (day - EPOCH).days


def _user_sql(a: int, b: int) -> str:
    per_type = ",\n".join(f"SUM(CASE WHEN event_type = '{t}' THEN 1 ELSE 0 END) AS n_{t}" for t in EVENT_TYPES)
    windows = []
    for t in (*EVENT_TYPES, "events"):
        c = f"n_{t}"
        w = "OVER (PARTITION BY g.user_id ORDER BY g.d RANGE BETWEEN {} PRECEDING AND CURRENT ROW)"
        if t != "events":
            windows += [f"CAST(COALESCE(SUM({c}) {w.format(0)}, 0) AS BIGINT) AS {c}_1d",
                        f"CAST(COALESCE(SUM({c}) {w.format(6)}, 0) AS BIGINT) AS {c}_7d",
                        f"CAST(COALESCE(SUM({c}) {w.format(29)}, 0) AS BIGINT) AS {c}_30d"]
        name = f"{c}_all" if t != "events" else "n_events"
        windows.append(f"CAST(COALESCE(SUM({c}) OVER run, 0) AS BIGINT) AS {name}")
    return f"""
    WITH ev AS (SELECT *, CAST(CAST(ds AS DATE) - DATE '1970-01-01' AS INTEGER) AS d FROM events),
    daily AS (
        SELECT user_id, d, {per_type}, COUNT(*) AS n_events,
               SUM(CASE WHEN event_type = 'rating' THEN value END) AS rating_sum,
               SUM(CASE WHEN event_type = 'rating' THEN 1 ELSE 0 END) AS rating_n,
               MAX(ts) AS last_ts
        FROM ev WHERE d <= {b} GROUP BY user_id, d),
    firsts AS (SELECT user_id, MIN(d) AS first_d FROM daily GROUP BY user_id),
    grid AS (SELECT f.user_id, CAST(r.range AS INTEGER) AS d FROM firsts f, range(f.first_d, {b} + 1) r),
    g AS (SELECT grid.user_id, grid.d, daily.* EXCLUDE (user_id, d) FROM grid LEFT JOIN daily USING (user_id, d))
    SELECT g.user_id, g.d, {", ".join(windows)},
           SUM(rating_sum) OVER run / NULLIF(SUM(rating_n) OVER run, 0) AS mean_rating,
           MAX(last_ts) OVER run AS last_event_ts
    FROM g
    WINDOW run AS (PARTITION BY g.user_id ORDER BY g.d ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    """


def _finish_users(con: duckdb.DuckDBPyConnection, a: int) -> pd.DataFrame:
    return con.execute(f"""
        SELECT * EXCLUDE (d, last_event_ts),
               ((d + 1) * 86400 - epoch(last_event_ts)) / 86400.0 AS recency_days,
               strftime(DATE '1970-01-01' + d, '%Y-%m-%d') AS ds
        FROM users_all WHERE d >= {a} ORDER BY ds, user_id
    """).df()


def _item_sql(a: int, b: int) -> str:
    def frame(lo: int, hi: int) -> str:
        return (f"CAST(COALESCE(SUM(n) OVER (PARTITION BY g.item_id ORDER BY g.d RANGE BETWEEN {lo} PRECEDING AND "
                f"{'CURRENT ROW' if hi == 0 else f'{hi} PRECEDING'}), 0) AS BIGINT)")

    return f"""
    WITH ev AS (SELECT *, CAST(CAST(ds AS DATE) - DATE '1970-01-01' AS INTEGER) AS d FROM events),
    daily AS (SELECT item_id, d, COUNT(*) AS n,
                     SUM(CASE WHEN event_type = 'rating' THEN value END) AS rating_sum,
                     SUM(CASE WHEN event_type = 'rating' THEN 1 ELSE 0 END) AS rating_n
              FROM ev WHERE d <= {b} GROUP BY item_id, d),
    firsts AS (SELECT item_id, MIN(d) AS first_d FROM daily GROUP BY item_id),
    grid AS (SELECT f.item_id, f.first_d, CAST(r.range AS INTEGER) AS d FROM firsts f, range(f.first_d, {b} + 1) r),
    g AS (SELECT grid.*, daily.n, daily.rating_sum, daily.rating_n FROM grid LEFT JOIN daily USING (item_id, d)),
    w AS (
        SELECT g.item_id, g.d, g.first_d,
               {frame(6, 0)} AS pop_7d, {frame(29, 0)} AS pop_30d, {frame(13, 7)} AS prev_7d,
               CAST(COALESCE(SUM(n) OVER run, 0) AS BIGINT) AS pop_all,
               SUM(rating_sum) OVER run / NULLIF(SUM(rating_n) OVER run, 0) AS mean_rating
        FROM g WINDOW run AS (PARTITION BY g.item_id ORDER BY g.d ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
    SELECT item_id, pop_7d, pop_30d, pop_all, (pop_7d + 1.0) / (prev_7d + 1.0) AS trend_7d,
           mean_rating, CAST(d - first_d AS INTEGER) AS age_days,
           strftime(DATE '1970-01-01' + d, '%Y-%m-%d') AS ds
    FROM w WHERE d >= {a} ORDER BY ds, item_id
    """


def _sequence_sql(last: int, history_length: int) -> str:
    return f"""
    WITH touch AS (
        SELECT user_id, item_id, MAX(ts) AS last_ts FROM events
        WHERE CAST(CAST(ds AS DATE) - DATE '1970-01-01' AS INTEGER) <= {last} GROUP BY user_id, item_id),
    lists AS (SELECT user_id, list(item_id ORDER BY last_ts, item_id) AS items FROM touch GROUP BY user_id)
    SELECT user_id, items[greatest(len(items) - {history_length} + 1, 1):] AS history, list_sort(items) AS seen
    FROM lists ORDER BY user_id
    """


def compute_features(events, first: dt.date, last: dt.date, online_history_length: int,
                     threads: int | None = None) -> OracleTables:
    """User and item feature tables for every day in [first, last], plus the online sequences as of ``last``."""
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.register("events_input", events)
    # Materialised once: the input may be a one-shot Arrow reader, and every table scans it.
    con.execute("CREATE TEMP TABLE events AS SELECT * FROM events_input")
    a, b = _day(first), _day(last)
    con.execute(f"CREATE TEMP TABLE users_all AS {_user_sql(a, b)}")
    users = _finish_users(con, a)
    items = con.execute(_item_sql(a, b)).df()
    sequences = con.execute(_sequence_sql(b, online_history_length)).df()
    con.close()
    return OracleTables(users=users, items=items, sequences=sequences)
