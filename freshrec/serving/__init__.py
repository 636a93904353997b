"""FreshRec serving tier: ONNX Runtime scoring behind a FastAPI app.

Imports only the shared core (freshrec.core.settings/errors/layout/schemas/registry) and never torch,
pyspark or airflow (tests/serving/test_imports.py enforces it), so a replica stays small and starts fast.
Entry point: ``freshrec.serving.api.create_app`` (``freshrec serve``).
"""
