"""The pipeline stages: data import, validation, features orchestration, training, evaluation, export, release,
monitoring. Imports freshrec.core; reaches Spark by submitting jobs and serving over HTTP, never by import."""
