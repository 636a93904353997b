"""Orchestration helpers of the features stage: which days a run covers, how the Spark job is submitted,
how a validated staging directory is published. The Spark work itself lives in ``freshrec.spark``."""
