"""FreshRec: one namespace, layered (imports point down only; tests/architecture/test_layers.py checks it).

    freshrec.cli       the `freshrec` command, on top: may import every plane, nothing imports it
    freshrec.dags      Airflow DAGs (thin wiring; the Airflow DAG folder, also reachable as ./dags)
    freshrec.tools     benchmarks, synthetic data, the traffic simulator
    freshrec.pipeline  the stages: data import, validation, training, evaluation, export, release, monitoring
    freshrec.spark     PySpark jobs (entry scripts for spark-submit in ./spark_jobs)
    freshrec.serving   the ONNX Runtime serving tier (no torch, pyspark or airflow)
    freshrec.core      settings, errors, schemas, layout, events, registry, online store
"""

__version__ = "0.1.0"
