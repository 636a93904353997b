"""FreshRec settings: one pydantic-settings object.

Precedence (highest first): explicit keyword arguments > ``FRESHREC_*`` environment variables >
the optional TOML config file > defaults. The config file is ``$FRESHREC_CONFIG`` when set, else
``$FRESHREC_HOME/freshrec.toml`` when it exists. Nested groups use ``__`` in env names, e.g.
``FRESHREC_SERVING__MAX_BATCH=64``. Unknown keys are errors (``extra="forbid"``). Secrets (admin and ingest
tokens, a registry URL with a password) come from the environment or from ``FRESHREC_<NAME>_FILE`` files of
mode 0600, never from the config file (``freshrec.core.secret_files``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from freshrec.core.errors import ConfigError
from freshrec.core.secret_files import SecretFilesSource, SecretFreeTomlSource


def _default_home() -> Path:
    """``.freshrec/`` in the checkout when run from one (editable install, the dev/CI setup), ``~/.freshrec``
    from an installed wheel; FRESHREC_HOME overrides either."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "freshrec" / "core").is_dir():
        return root / ".freshrec"
    return Path.home() / ".freshrec"


_DEFAULT_HOME = _default_home()


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSettings(_Group):
    quarantine_max_share: float = Field(default=0.05, ge=0, le=1, description="a day above this invalid share stops the run")
    future_ts_tolerance_s: int = Field(default=3600, ge=0, description="events further in the future than this are quarantined")
    rating_min: float = 0.5
    rating_max: float = 5.0
    online_history_length: int = Field(default=256, ge=1, description="history items per user in the online snapshot (model input)")
    volume_ratio_min: float = Field(default=0.2, ge=0, description="raw volume vs trailing average, lower bound")
    volume_ratio_max: float = Field(default=5.0, ge=0, description="raw volume vs trailing average, upper bound")
    drift_max_kl: float = Field(default=0.5, ge=0, description="max KL divergence of feature distributions vs the previous day")


class TrainingSettings(_Group):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    teacher_epochs: int = Field(default=30, ge=1)
    student_epochs: int = Field(default=40, ge=1)
    holdout_days: int = Field(default=7, ge=1, description="temporal holdout used by the gates")
    protocol: Literal["temporal", "msr", "sequential", "prequential"] = Field(
        default="temporal", description="the holdout the gates compare on (freshrec.pipeline.training.protocols); the "
        "retrain form's protocol overrides it per run")
    torch_threads: int = Field(default=1, ge=1, description="CPU threads for training (small ops: 1 beats 2 on a busy box)")
    refit_on_all: bool = Field(
        default=True,
        description="after the gates pass on the holdout-trained models, refit teacher and distilled student on all "
        "interactions (training part + holdout; same recipe and epoch counts) and serve that refit; gate metrics and "
        "the next run's champion comparison keep using the holdout-trained graph (student.eval.int8.onnx). "
        "False: serve the holdout-trained models",
    )
    event_signals: bool = Field(
        default=False,
        description="let the teacher's wide layer weigh each (user, item) pair by its events (types, repeats, stars) "
        "when the validation split ranks that better; off: `freshrec bench signals` found no held-out gain (synthetic "
        "+0.4%, ML-100K -0.06%, both within noise) for twice the closed-form solves",
    )
    order_window: int = Field(
        default=8, ge=0, le=64,
        description="order-aware teacher and student: the newest N history items get learned position weights and the "
        "newest one a transition vector (freshrec.pipeline.training.models.OrderTerms), trained with next-item targets "
        "mixed in (next_item_share); the student is order-aware only where the teacher's validation chose a transition "
        "term and the order-aware student ranks the validation split better than the order-blind one "
        "(stages.student_windows); 0 = order-blind",
    )
    student_neighbours: int = Field(
        default=0, ge=0, le=512,
        description="the student's neighbour table: per item, the N neighbours where its rank-dim factorisation of the "
        "teacher's item-to-item layer falls short most, scored exactly for every history item "
        "(freshrec.pipeline.training.models.Student). ML-100K msr nDCG@10 0.488 -> 0.493 at 64 (a 128-wide student), but ORT's "
        "ScatterElements makes a request's graph about 0.1 ms slower and batch-64 throughput 3-7x lower: off "
        "by default (the serving budget comes first); 0 = off",
    )
    next_item_share: float = Field(
        default=0.5, ge=0, le=1,
        description="with order_window > 0: the share of training rows that predict a user's next item from the items "
        "before it (the rest are the denoising rows: a random part of the history predicts the rest)",
    )
    seed: int = 42


class GateSettings(_Group):
    min_ndcg_at_10: float = Field(default=0.0, ge=0, le=1, description="absolute floor for the candidate")
    max_regression: float = Field(default=0.01, ge=0, description="relative nDCG@10 loss allowed vs the champion")
    int8_max_loss: float = Field(default=0.01, ge=0, description="relative nDCG@10 loss allowed for int8 vs fp32")


class ServingSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=0, ge=0, description="uvicorn worker processes per replica; 0 = one per CPU core (at most 8)")
    providers: list[str] | None = Field(default=None, description="ONNX Runtime providers in order; None = best available")
    intra_op_threads: int = Field(default=1, ge=0)
    max_batch: int = Field(default=64, ge=1)
    max_wait_ms: float = Field(default=0.5, ge=0, le=1.0)
    max_queue: int = Field(default=1024, ge=1)
    request_deadline_ms: float = Field(default=1000.0, gt=0, description="a scoring job queued longer than this is shed (503)")
    cache_ttl_s: float = Field(default=30.0, ge=0)
    cache_size: int = Field(default=100_000, ge=0)
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    slo_latency_ms: float = Field(default=10.0, gt=0, description="p99 latency SLO threshold (a histogram bucket boundary)")
    artifact_variant: Literal["auto", "fp32", "int8", "fp16", "teacher"] = Field(
        default="auto", description="artifact served; auto = int8 on CPU, fp16 (else fp32) on CUDA")
    max_candidates: int = Field(default=5000, ge=1, description="catalogues larger than this go through a retrieval stage: "
                                "ANN over the student's item vectors when the bundle has an index (export builds one "
                                "above this size), else its max_candidates most popular items")
    retrieval_fetch: int = Field(default=100, ge=10, le=10_000, description="items the ANN index returns per request "
                                 "(scored exactly with the sparse terms' items; seen items are removed after)")
    retrieval_expansion: int = Field(default=128, ge=10, le=10_000, description="HNSW search list length (ef) per query; "
                                     "at least retrieval_fetch")
    cuda_graphs: bool = Field(default=False, description="capture CUDA graphs per padded batch size (CUDA EP only)")
    max_events_per_request: int = Field(default=1000, ge=1, le=100_000, description="events one POST /v1/events may carry")
    log_fsync: bool = Field(default=True, description="fsync the ingestion log before acknowledging events (group commit)")
    log_segment_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="an ingestion log segment is sealed at this size")
    log_segment_max_age_s: float = Field(default=60.0, gt=0, description="... or this long after it was opened (and at UTC midnight)")
    scoring_thread: bool = Field(default=False, description="score on a thread (overlaps HTTP parsing) instead of inline on the event loop")
    max_queue_age_ms: float = Field(default=5.0, ge=0, description="shed new requests (503) while work waits longer than this "
                                    "for the event loop (its lag, sustained over a window); 0 = off")


class OnlineSettings(_Group):
    """The online store: each user's live tail of events since the snapshot, shared by workers and replicas."""

    enabled: bool = Field(default=True, description="merge live tails into the snapshot histories; false = the daily snapshot only")
    store_url: str | None = Field(default=None, description="redis://host:port/db (rediss://, redis+sentinel is not supported: use "
                                  "a proxy); unset = the embedded store under home, shared by one host's workers")
    namespace: str = Field(default="freshrec", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                           description="key prefix in the store (several deployments or tests can share one Redis)")
    tail_length: int = Field(default=256, ge=1, description="live events kept per user (the newest)")
    tail_ttl_s: float = Field(default=14 * 86400, gt=0, description="a user's live tail expires this long after their last event")
    trim_grace_s: float = Field(default=300.0, ge=0, description="entries a new snapshot covers are trimmed this long after it went live")
    timeout_ms: float = Field(default=50.0, gt=0, description="a store call slower than this fails (recommend then serves the snapshot)")
    client_cache_events: int = Field(default=200_000, ge=0, description="Redis only: live events each worker keeps cached "
                                     "(tails Redis has not invalidated; read-your-writes kept, see tail_cache.py); 0 = off")
    client_cache_max_age_s: float = Field(default=5.0, gt=0, description="Redis only: a cached tail is read again after this "
                                          "long even without an invalidation")


class ReleaseSettings(_Group):
    steps: list[int] = Field(default_factory=lambda: [5, 25, 50, 100])
    interval_s: float = Field(default=60.0, gt=0)
    min_requests_per_step: int = Field(default=200, ge=1)
    failure_threshold: int = Field(default=1, ge=1)
    max_p99_ms: float = Field(default=10.0, gt=0)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_psi: float = Field(default=0.25, ge=0)
    psi_blocks: bool = Field(default=False, description="a score PSI above max_psi fails the canary (off: recorded only, as "
                             "two model versions' raw scores are not calibrated to each other)")
    max_p99_ratio_vs_champion: float = Field(default=1.5, ge=1, description="canary p99 may be this times the champion's")
    p99_slack_ms: float = Field(default=2.0, ge=0, description="... or this much above it (histogram bucket resolution)")
    ctr_min_delta: float = Field(default=0.02, gt=0, le=1, description="smallest absolute CTR change the online test must detect")
    max_extensions: int = Field(default=1, ge=0, description="times a step with too little traffic is extended")
    convergence_timeout_s: float = Field(default=60.0, gt=0, description="wait for every replica to load a change")
    require_approval: bool = Field(default=False, description="Inconclusive canaries wait for a human instead of rolling back")


class MonitoringSettings(_Group):
    availability_target: float = Field(default=0.999, gt=0, lt=1, description="share of requests that must not fail")
    latency_target: float = Field(default=0.99, gt=0, lt=1, description="share of requests faster than serving.slo_latency_ms")
    max_model_age_h: float = Field(default=48.0, gt=0, description="champion older than this is stale -> retrain")
    max_features_age_h: float = Field(default=48.0, gt=0, description="newest features partition older than this is stale")
    max_drift_psi: float = Field(default=0.25, ge=0, description="champion score PSI vs its reference above this -> retrain")
    prometheus_url: str | None = Field(default=None, description="read counters from this Prometheus server instead of /metrics")
    webhook_url: str | None = Field(default=None, description="alerts are also POSTed here as JSON")
    retention_days: float = Field(default=7.0, gt=0, description="counter snapshots older than this are deleted")


class Settings(BaseSettings):
    """Everything configurable in FreshRec."""

    model_config = SettingsConfigDict(
        env_prefix="FRESHREC_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    home: Path = Field(default=_DEFAULT_HOME, description="state root: lake, models, registry, airflow, reports")
    config: Path | None = Field(default=None, description="optional TOML config file (see module doc)")
    registry_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite under home")
    spark_master: str = Field(default="local[*]", description="local[N], spark://..., yarn, k8s://... or sc:// (Spark Connect)")
    spark_driver_memory: str = "4g"
    spark_job_timeout_s: float = Field(default=3600.0, gt=0, description="a Spark job the pipeline runs as a subprocess "
                                       "(landing, publish, training input) is killed past this and fails its task")
    admin_token: SecretStr | None = Field(default=None, description="bearer token for serving admin routes")
    ingest_token: SecretStr | None = Field(default=None, description="bearer token POST /v1/events requires when set")
    serving_url: str = Field(default="http://127.0.0.1:8000", description="where tasks reach the serving tier")
    serving_replicas: list[str] = Field(default_factory=list, description="replica base URLs; empty = serving_url only")
    allow_fault_injection: bool = False
    model_name: str = "freshrec"
    log_level: str = "INFO"

    data: DataSettings = Field(default_factory=DataSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    gates: GateSettings = Field(default_factory=GateSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    online: OnlineSettings = Field(default_factory=OnlineSettings)
    release: ReleaseSettings = Field(default_factory=ReleaseSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, SecretFilesSource(settings_cls)]
        config_file = _config_file()
        if config_file is not None:
            sources.append(SecretFreeTomlSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def effective_registry_url(self) -> str:
        return self.registry_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def replicas(self) -> list[str]:
        return self.serving_replicas or [self.serving_url]


def _config_file() -> Path | None:
    explicit = os.environ.get("FRESHREC_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"FRESHREC_CONFIG points to {path}, which is not a file")
        return path
    home = Path(os.environ.get("FRESHREC_HOME", _DEFAULT_HOME)).expanduser()
    candidate = home / "freshrec.toml"
    return candidate if candidate.is_file() else None


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning validation problems into one readable ConfigError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid FreshRec settings: {problems}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached). Tests that change the environment call ``get_settings.cache_clear()``."""
    return load_settings()
