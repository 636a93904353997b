"""Airflow DAGs: thin wiring of freshrec.pipeline stages. This folder is the Airflow DAG folder (./dags links here)."""
