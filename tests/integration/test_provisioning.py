"""`scripts/infra_services.py` provisions the role and database of DATABASE_URL as the cluster's superuser:
names and passwords that hold quotes, semicolons or backslashes must stay data, never become SQL."""

from __future__ import annotations

import sys
import uuid
from urllib.parse import quote

import pytest

from shared.runtime.config import Settings
from shared.store.db import connect
from tests.fixtures.stack import load_script

pytestmark = pytest.mark.integration

load_script("infra")  # puts scripts/ on the path, as running it does
infra_services = sys.modules["infra_services"]


def drop(role: str, db: str) -> None:
    infra_services.as_postgres(
        ["psql", "-qX", "-v", "ON_ERROR_STOP=1", "-v", f"role={role}", "-v", f"db={db}"],
        "SELECT format('DROP DATABASE IF EXISTS %I', :'db') \\gexec\n"
        "SELECT format('DROP ROLE IF EXISTS %I', :'role') \\gexec\n",
    )


async def test_a_hostile_role_name_and_password_are_provisioned_verbatim(infrastructure: Settings) -> None:
    """Kills the f-string SQL it replaced: the role `x"; DROP ...` broke out of its quotes there (and a
    password with a quote ended its literal), so the statement failed or ran what the name carried."""
    suffix = uuid.uuid4().hex[:8]
    role = f"o'rder\"; SELECT 1; --{suffix}"
    password = "p'a\"ss\\word; $$"
    db = f'db "{suffix}"; x\''
    host, port = infrastructure.database_address
    url = f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(db, safe='')}"
    try:
        infra_services.provision_database(Settings(database_url=url))
        # twice: the second run finds the role and the database and brings them up to date
        infra_services.provision_database(Settings(database_url=url))
        conn = await connect(url, jsonb=False)
        try:
            assert await conn.fetchval("SELECT current_user") == role
            assert await conn.fetchval("SELECT current_database()") == db
        finally:
            await conn.close()
    finally:
        drop(role, db)
