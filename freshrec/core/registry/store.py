"""The model registry: versions, lineage, aliases champion / canary / previous, verdicts, audit log.

Reads return frozen views; every write is one transaction that also appends to the audit log. Alias,
weight and fault changes bump the model's ``generation`` in the same transaction, so the serving tier
polls one integer and reconciles only when it moved.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from freshrec.core.errors import ArtifactIntegrityError, Conflict, InvalidInput, NotFound
from freshrec.core.registry import inputs
from freshrec.core.registry.integrity import verify_version
from freshrec.core.registry.models import ALIAS_NAMES, Alias, Artifact, AuditEntryRow, Lineage, Metric, Model, Verdict, Version
from freshrec.core.registry.reads import VERSION_LOADS, version_view
from freshrec.core.registry.transaction import AliasChange, append_audit
from freshrec.core.registry.views import AuditEntry, ServingState, State, VersionView


def default_actor() -> str:
    try:
        return getpass.getuser()
    except OSError:  # no login name in some containers
        return "unknown"


def parse_version(version: int | str) -> int:
    """Versions are integers; "7" and 7 are the same version."""
    try:
        number = int(str(version).strip().lstrip("v"))
    except ValueError as exc:
        raise InvalidInput(f"{version!r} is not a version number") from exc
    if number < 1:
        raise InvalidInput(f"{version!r} is not a version number")
    return number


def verdict_reason(body: Mapping[str, Any]) -> str | None:
    """The audit log's one-line why for a verdict: its ``reason`` or its ``reasons`` joined."""
    if isinstance(body.get("reason"), str):
        return body["reason"]
    reasons = body.get("reasons")
    return "; ".join(map(str, reasons)) if isinstance(reasons, list) and reasons else None


class Registry:
    """One model's registry (``settings.model_name``) on one database."""

    def __init__(self, engine: Engine, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._model_id = self._ensure_model()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---------------------------------------------------------------- reads

    def get_version(self, version: int | str) -> VersionView:
        number = parse_version(version)
        with self._sessions() as session:
            return version_view(self._load(session, number), self.model_name)

    def list_versions(self, states: list[str] | None = None) -> list[VersionView]:
        query = select(Version).where(Version.model_id == self._model_id).options(*VERSION_LOADS)
        if states:
            unknown = sorted(set(states) - {s.value for s in State})
            if unknown:
                raise InvalidInput(f"unknown version state(s) {unknown}; states are {[s.value for s in State]}")
            query = query.where(Version.state.in_(list(states)))
        with self._sessions() as session:
            return [version_view(v, self.model_name) for v in session.execute(query.order_by(Version.version)).scalars()]

    def generation(self) -> int:
        """The cheap poll: changes whenever an alias, a canary weight or a fault spec changes."""
        with self._sessions() as session:
            return session.execute(select(Model.generation).where(Model.id == self._model_id)).scalar_one()

    def serving_state(self) -> ServingState:
        # Generation and aliases come from one statement, so they describe the same committed state.
        pointers = select(Model.generation, Alias.name, Alias.version, Alias.weight, Alias.shadow).join(
            Alias, Alias.model_id == Model.id
        ).where(Model.id == self._model_id)
        with self._sessions() as session:
            rows = session.execute(pointers).all()
            generation = rows[0].generation
            aliases = {row.name: row for row in rows}
            wanted = {row.version for row in rows if row.version is not None}
            loaded = session.execute(select(Version).where(Version.version.in_(wanted)).options(*VERSION_LOADS)).scalars()
            views = {row.version: version_view(row, self.model_name) for row in loaded}
        canary = aliases["canary"]
        active = canary.version is not None
        return ServingState(
            champion=views.get(aliases["champion"].version),
            canary=views.get(canary.version),
            previous=views.get(aliases["previous"].version),
            canary_weight=float(canary.weight) if active else 0.0,
            shadow=bool(canary.shadow) if active else False,
            generation=generation,
        )

    def audit_log(self, version: int | str | None = None) -> list[AuditEntry]:
        query = select(AuditEntryRow).where(AuditEntryRow.model_id == self._model_id)
        if version is not None:
            query = query.where(AuditEntryRow.version == parse_version(version))
        with self._sessions() as session:
            rows = session.execute(query.order_by(AuditEntryRow.id)).scalars()
            return [
                AuditEntry(r.id, r.at, r.actor, r.action, r.version, r.reason, r.before, r.after) for r in rows
            ]

    # ---------------------------------------------------------------- writes

    def register_candidate(
        self,
        bundle_dir: str | Path,
        artifacts: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
        card: Mapping[str, Any] | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> VersionView:
        """Record a new version in state ``candidate``; artifacts are hashed (or checked) here."""
        bundle = Path(bundle_dir).expanduser().resolve()
        if not bundle.is_dir():
            raise InvalidInput(f"bundle directory {bundle} does not exist")
        if not artifacts:
            raise InvalidInput("a candidate needs at least one artifact")
        resolved = [inputs.resolve_artifact(variant, spec, bundle) for variant, spec in artifacts.items()]
        metric_values = inputs.metric_values(metrics or {})
        lineage_columns = inputs.split_lineage(lineage or {})
        card_value = inputs.to_jsonable(dict(card or {}), "card")
        actor = actor or default_actor()
        with self._transaction() as session:
            parent = lineage_columns["parent_version"]
            if parent is not None and session.get(Version, parent) is None:
                raise InvalidInput(f"lineage parent_version {parent} is not a registered version")
            row = Version(
                model_id=self._model_id, state=State.CANDIDATE.value, bundle_dir=str(bundle), created_by=actor,
                reasons=[], evidence={}, faults={}, card=card_value,
            )
            row.artifacts = [Artifact(variant=a.variant, uri=a.uri, sha256=a.sha256, size=a.size) for a in resolved]
            row.metrics = [Metric(name=k, value=v) for k, v in metric_values.items()]
            row.lineage = Lineage(**lineage_columns)
            session.add(row)
            session.flush()
            append_audit(
                session, self._model_id, actor=actor, action="register", version=row.version, reason=reason,
                before={}, after={"state": State.CANDIDATE.value, "bundle_dir": str(bundle)},
            )
            number = row.version
        return self.get_version(number)

    def start_canary(
        self, version: int | str, weight: float, actor: str | None = None, reason: str | None = None,
        *, shadow: bool = False, expected_generation: int | None = None,
    ) -> VersionView:
        """candidate -> canary with ``weight`` percent of traffic (``shadow``: mirrored, not served).
        Refused (Conflict) unless every artifact of the version verifies."""
        number, weight = parse_version(version), inputs.check_weight(weight)
        self._verify_before_serving(number, "start a canary of")

        def change(session: Session, txn: AliasChange) -> None:
            self._load(session, number)
            active = txn.alias("canary")
            if active is not None:
                raise Conflict(f"version {active} is already the canary; promote or roll it back first")
            if txn.alias("champion") is None:
                raise Conflict("there is no champion to compare a canary with; promote the first version directly")
            txn.move_state(number, State.CANARY)
            txn.move_alias("canary", number, weight=weight, shadow=shadow)

        self._alias_change("start_canary", number, actor, reason, change, expected_generation)
        return self.get_version(number)

    def set_canary_weight(
        self, weight: float, actor: str | None = None, reason: str | None = None,
        *, shadow: bool | None = None, expected_generation: int | None = None,
    ) -> ServingState:
        weight = inputs.check_weight(weight)
        def change(session: Session, txn: AliasChange) -> None:
            canary = txn.alias("canary")
            if canary is None:
                raise Conflict("there is no active canary whose weight could be set")
            txn.subject = canary
            txn.move_alias("canary", canary, weight=weight, shadow=shadow)

        self._alias_change("set_canary_weight", None, actor, reason, change, expected_generation)
        return self.serving_state()

    def promote(
        self, version: int | str, actor: str | None = None, reason: str | None = None,
        *, expected_generation: int | None = None,
    ) -> VersionView:
        """champion <- version, previous <- old champion (archived, stays loadable), canary cleared.
        Refused (Conflict) unless every artifact of the version verifies."""
        number = parse_version(version)
        self._verify_before_serving(number, "promote")

        def change(session: Session, txn: AliasChange) -> None:
            self._load(session, number)
            champion, canary = txn.alias("champion"), txn.alias("canary")
            if champion == number:
                raise Conflict(f"version {number} is already the champion")
            if canary is not None and canary != number:
                raise Conflict(f"version {canary} is the active canary; promote or roll it back before promoting {number}")
            txn.move_state(number, State.CHAMPION)
            if champion is not None:
                txn.move_state(champion, State.ARCHIVED)
                txn.move_alias("previous", champion)
            elif txn.alias("previous") == number:
                txn.move_alias("previous", None)
            txn.move_alias("champion", number)
            if canary is not None:
                txn.move_alias("canary", None, weight=0.0, shadow=False)

        self._alias_change("promote", number, actor, reason, change, expected_generation)
        return self.get_version(number)

    def rollback(
        self, actor: str | None = None, reason: str | None = None, *, expected_generation: int | None = None
    ) -> ServingState:
        """Abort the active canary (rejected, weight 0); without one, champion <- previous, which is a
        promotion of ``previous``: refused (Conflict) unless every file of it verifies."""
        verified = self._verify_rollback_target()

        def change(session: Session, txn: AliasChange) -> None:
            canary, champion, previous = txn.alias("canary"), txn.alias("champion"), txn.alias("previous")
            if canary is not None:
                txn.subject = canary
                txn.move_state(canary, State.REJECTED, reasons=[reason or "canary rolled back"])
                txn.move_alias("canary", None, weight=0.0, shadow=False)
                return
            if previous is None:
                raise Conflict("nothing to roll back: no active canary and no previous champion")
            if previous != verified:
                raise Conflict("the registry changed while the rollback target was being verified; retry")
            txn.subject = previous
            if champion is not None:
                txn.move_state(champion, State.ARCHIVED, reasons=[reason or "rolled back"])
            txn.move_state(previous, State.CHAMPION)
            txn.move_alias("champion", previous)
            txn.move_alias("previous", None)

        self._alias_change("rollback", None, actor, reason, change, expected_generation)
        return self.serving_state()

    def reject(
        self, version: int | str, reasons: str | list[str], evidence: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> VersionView:
        """candidate or canary -> rejected, with the reasons and the evidence behind them."""
        number, reason_list = parse_version(version), inputs.reason_list(reasons)
        if not reason_list:
            raise InvalidInput("a rejection needs at least one reason")
        evidence_value = inputs.to_jsonable(dict(evidence or {}), "evidence")

        def change(session: Session, txn: AliasChange) -> None:
            self._load(session, number)
            txn.move_state(number, State.REJECTED, reasons=reason_list, evidence=evidence_value)
            if txn.alias("canary") == number:
                txn.move_alias("canary", None, weight=0.0, shadow=False)

        self._alias_change("reject", number, actor, "; ".join(reason_list), change, None)
        return self.get_version(number)

    def set_faults(
        self, version: int | str, latency_ms: float = 0.0, error_rate: float = 0.0, actor: str | None = None,
        reason: str | None = None,
    ) -> VersionView:
        """Mark a version for fault injection (applied only by servers that allow it); zeros clear it."""
        number, faults = parse_version(version), inputs.check_faults(latency_ms, error_rate)

        def change(session: Session, txn: AliasChange) -> None:
            row = self._load(session, number)
            txn.bump_generation()
            row.faults = faults

        self._alias_change("set_faults", number, actor, reason, change, None, extra_after={"faults": faults})
        return self.get_version(number)

    def record_verdict(self, version: int | str, verdict: Mapping[str, Any], actor: str | None = None) -> VersionView:
        """Store a release-analysis verdict (its metrics and evidence) on the version."""
        number = parse_version(version)
        body = inputs.to_jsonable(dict(verdict), "verdict")
        outcome = next((str(body[k]) for k in ("verdict", "outcome", "decision") if body.get(k) is not None), None)
        actor = actor or default_actor()
        with self._transaction() as session:
            self._load(session, number)
            session.add(Verdict(version=number, actor=actor, outcome=outcome, verdict=body))
            append_audit(
                session, self._model_id, actor=actor, action="verdict", version=number,
                reason=verdict_reason(body),
                before={}, after={"outcome": outcome},
            )
        return self.get_version(number)

    # ---------------------------------------------------------------- internals

    def _alias_change(
        self,
        action: str,
        version: int | None,
        actor: str | None,
        reason: str | None,
        change: Callable[[Session, AliasChange], None],
        expected_generation: int | None,
        *,
        extra_after: dict[str, Any] | None = None,
    ) -> None:
        """Run ``change`` in one transaction with compare-and-set aliases and an audit record."""
        with self._transaction() as session:
            txn = AliasChange(session, self._model_id, expected_generation, subject=version)
            before = txn.snapshot()
            if version is not None:
                self._load(session, version)
            # The compare-and-set on the generation comes first: it is where concurrent writers queue.
            txn.bump_generation()
            change(session, txn)
            txn.record(action, actor or default_actor(), reason, before, extra_after or {})

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError as exc:
            raise Conflict(f"the registry was changed concurrently: {exc.orig}") from exc
        except OperationalError as exc:
            # SQLite gives up after its busy timeout while another writer holds the lock: retryable.
            if "locked" not in str(exc.orig):
                raise
            raise Conflict("the registry database stayed locked by another writer; nothing was changed, retry") from exc

    def _verify_rollback_target(self) -> int | None:
        """The version a rollback would make champion (``previous`` when no canary is active), verified first;
        None when the rollback only aborts a canary (nothing new takes traffic) or has no target."""
        state = self.serving_state()
        if state.canary is not None or state.previous is None:
            return None
        number = int(state.previous.version)
        self._verify_before_serving(number, "roll back to")
        return number

    def _verify_before_serving(self, number: int, action: str) -> None:
        """Serving must never be pointed at a version it cannot load: hash its files first (outside the
        alias transaction: hashing takes as long as the files are big)."""
        view = self.get_version(number)
        try:
            verify_version(view.artifacts, view.bundle_dir)
        except ArtifactIntegrityError as exc:
            raise Conflict(f"cannot {action} version {number}: {exc.message}") from exc

    def _load(self, session: Session, number: int) -> Version:
        row = session.execute(
            select(Version).where(Version.version == number, Version.model_id == self._model_id).options(*VERSION_LOADS)
        ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"version {number} of model {self.model_name} does not exist")
        return row

    def _ensure_model(self) -> int:
        """The model row and its three alias rows; racing creators settle on one via the unique name."""
        for _ in range(3):
            with self._sessions() as session:
                found = session.execute(select(Model.id).where(Model.name == self.model_name)).scalar_one_or_none()
            if found is not None:
                return found
            try:
                with self._sessions.begin() as session:
                    model = Model(name=self.model_name, generation=0)
                    session.add(model)
                    session.flush()
                    session.add_all(
                        Alias(model_id=model.id, name=n, version=None, weight=0.0, shadow=False) for n in ALIAS_NAMES
                    )
                    return model.id
            except IntegrityError:
                continue
        raise Conflict(f"could not create model {self.model_name} in the registry")
