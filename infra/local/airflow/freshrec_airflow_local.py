"""Airflow settings for the local stack that have to be Python objects (Airflow imports them by path).

``[database] sql_alchemy_connect_args = freshrec_airflow_local.SQLITE_CONNECT_ARGS``: the scheduler,
dag-processor, triggerer and API server all write to one SQLite file. pysqlite's default busy timeout
(5 s) is too short on a small, busy machine: the API server then answers 503 "Database is locked" to
`POST /api/v2/backfills`. Waiting up to a minute for the lock turns that into a short delay.
"""

SQLITE_CONNECT_ARGS = {"timeout": 60}
