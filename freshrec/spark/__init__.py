"""The PySpark jobs: clean + quarantine, feature tables, online snapshot, landing of the ingestion log, publish.
Imports only freshrec.core; ./spark_jobs holds their spark-submit entry scripts."""
