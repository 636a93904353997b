#!/bin/bash
# First start of the Postgres container: one database and role for Airflow's metadata, one for the
# FreshRec model registry (its Alembic migrations run when the registry is first opened).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username postgres <<SQL
CREATE ROLE airflow LOGIN PASSWORD '${AIRFLOW_DB_PASSWORD}';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE freshrec LOGIN PASSWORD '${FRESHREC_DB_PASSWORD}';
CREATE DATABASE freshrec OWNER freshrec;
SQL
