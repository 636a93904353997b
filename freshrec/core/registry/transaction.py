"""One registry write: a database transaction with compare-and-set helpers and the audit record.

Every alias, weight or fault change goes through ``AliasChange``: it reads the model's generation and
aliases at the start, and every write is conditional on what was read (``UPDATE ... WHERE generation =
:read`` and ``WHERE version IS NOT DISTINCT FROM :expected``). When a concurrent writer got there first
the UPDATE matches no row (on Postgres the second writer blocks on the row lock and then re-checks the
condition against the committed row), the transaction rolls back and the caller gets ``Conflict``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from freshrec.core.errors import Conflict
from freshrec.core.registry.models import ALIAS_NAMES, Alias, AuditEntryRow, Model, Version, utcnow
from freshrec.core.registry.views import TRANSITIONS, State


@dataclass
class AliasSnapshot:
    version: int | None
    weight: float
    shadow: bool


class AliasChange:
    """Compare-and-set writes against the state read when the change began."""

    def __init__(
        self, session: Session, model_id: int, expected_generation: int | None = None, *, subject: int | None = None
    ) -> None:
        self.session = session
        self.model_id = model_id
        self.subject = subject  # the version the change is about, for the audit log
        self.generation = session.execute(select(Model.generation).where(Model.id == model_id)).scalar_one()
        if expected_generation is not None and expected_generation != self.generation:
            raise Conflict(
                f"the registry moved on (generation {self.generation}, expected {expected_generation}); "
                "re-read the serving state and retry",
                details={"generation": self.generation, "expected_generation": expected_generation},
            )
        rows = session.execute(select(Alias).where(Alias.model_id == model_id)).scalars()
        self.aliases = {row.name: AliasSnapshot(row.version, row.weight, row.shadow) for row in rows}
        self._bumped = False
        self.moved: dict[int, tuple[str, str]] = {}

    def alias(self, name: str) -> int | None:
        return self.aliases[name].version

    def snapshot(self) -> dict[str, Any]:
        canary = self.aliases["canary"]
        return {
            **{name: self.aliases[name].version for name in ALIAS_NAMES},
            "canary_weight": canary.weight,
            "shadow": canary.shadow,
            "generation": self.generation,
        }

    def bump_generation(self) -> None:
        """The serialisation point: exactly one of two concurrent changes passes it."""
        if self._bumped:
            return
        result = cast(CursorResult[Any], self.session.execute(  # DML yields a CursorResult; execute() is typed Result
            update(Model)
            .where(Model.id == self.model_id, Model.generation == self.generation)
            .values(generation=Model.generation + 1)
            .execution_options(synchronize_session=False)
        ))
        if result.rowcount != 1:
            raise Conflict("the registry was changed concurrently by another writer; nothing was changed, retry")
        self.generation += 1
        self._bumped = True

    def move_alias(self, name: str, version: int | None, *, weight: float | None = None, shadow: bool | None = None) -> None:
        self.bump_generation()
        current = self.aliases[name]
        new = AliasSnapshot(
            version,
            current.weight if weight is None else weight,
            current.shadow if shadow is None else shadow,
        )
        result = cast(CursorResult[Any], self.session.execute(
            update(Alias)
            .where(
                Alias.model_id == self.model_id,
                Alias.name == name,
                Alias.version.is_not_distinct_from(current.version),
            )
            .values(version=new.version, weight=new.weight, shadow=new.shadow, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ))
        if result.rowcount != 1:
            raise Conflict(f"alias {name} no longer points to {current.version}; nothing was changed, retry")
        self.aliases[name] = new

    def move_state(self, version: int, new_state: State, **values: Any) -> None:
        """Transition ``version`` along the state machine, conditional on the state it had when read."""
        old_state = move_version_state(self.session, version, new_state, **values)
        first_state = self.moved.get(version, (old_state, ""))[0]
        self.moved[version] = (first_state, new_state.value)


    def record(self, action: str, actor: str, reason: str | None, before: dict[str, Any], extra_after: dict[str, Any]) -> None:
        """Audit rows: one for the subject and one for every other version whose state moved."""
        after = self.snapshot() | extra_after
        targets: list[int | None] = [self.subject] if self.subject is not None else []
        targets += [v for v in self.moved if v not in targets]
        for number in targets or [None]:
            states: dict[str, Any] = {}
            if number is not None:
                current = self.session.execute(select(Version.state).where(Version.version == number)).scalar_one()
                old, new = self.moved.get(number, (current, current))
                states = {"before": {"state": old}, "after": {"state": new}}
            append_audit(
                self.session, self.model_id, actor=actor, action=action, version=number, reason=reason,
                before=before | states.get("before", {}), after=after | states.get("after", {}),
            )


def move_version_state(session: Session, version: int, new_state: State, **values: Any) -> str:
    """Check the transition, then ``UPDATE ... WHERE state = :old``; returns the old state."""
    old_state = session.execute(select(Version.state).where(Version.version == version)).scalar_one()
    check_transition(version, State(old_state), new_state)
    result = cast(CursorResult[Any], session.execute(
        update(Version)
        .where(Version.version == version, Version.state == old_state)
        .values(state=new_state.value, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    ))
    if result.rowcount != 1:
        raise Conflict(f"version {version} changed state concurrently; nothing was changed, retry")
    return old_state


def check_transition(version: int, old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[old])) or "nothing (final state)"
        raise Conflict(
            f"version {version} is {old.value}: it cannot become {new.value} (from {old.value} it may become {allowed})",
            details={"version": version, "state": old.value, "requested": new.value},
        )


def append_audit(
    session: Session,
    model_id: int,
    *,
    actor: str,
    action: str,
    version: int | None,
    reason: str | None,
    before: dict[str, Any],
    after: dict[str, Any],
    at: dt.datetime | None = None,
) -> None:
    session.add(
        AuditEntryRow(
            model_id=model_id,
            actor=actor,
            action=action,
            version=version,
            reason=reason,
            before=before,
            after=after,
            at=at or utcnow(),
        )
    )
