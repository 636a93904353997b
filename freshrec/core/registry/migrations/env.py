"""Alembic environment for the FreshRec registry.

``freshrec.core.registry.database`` runs migrations programmatically and hands over an open connection in
``config.attributes["connection"]``. The ``alembic`` command line works too (``-c
freshrec/registry/alembic.ini``): it uses ``sqlalchemy.url`` when set, else the configured registry.
"""

from __future__ import annotations

from alembic import context

from freshrec.core.registry.database import make_engine
from freshrec.core.registry.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # noqa: ANN001 - alembic hands over a plain Connection
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    configured = config.get_main_option("sqlalchemy.url")
    if configured:
        return configured
    from freshrec.core.settings import get_settings

    return get_settings().effective_registry_url


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
