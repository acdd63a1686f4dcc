"""Write the DDL that `Tortoise.generate_schemas(safe=True)` ran for an old commit's models.py,
for SQLite and PostgreSQL: the databases sequencer made before it had migrations.

    .venv/bin/python tests/schemas/capture.py faab963   # -> tests/schemas/faab963.*.sql

Nothing connects to a database: tortoise only renders the SQL for each dialect.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from tortoise import Tortoise, connections
from tortoise.utils import get_schema_sql

HERE = Path(__file__).parent
URLS = {"sqlite": "sqlite://:memory:", "postgres": "postgres://capture@127.0.0.1:5432/capture"}


async def capture(rev: str, source: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"models_{rev}.py").write_text(source)
        sys.path.insert(0, tmp)
        for dialect, url in URLS.items():
            await Tortoise.init(db_url=url, modules={"models": [f"models_{rev}"]})
            ddl = get_schema_sql(connections.get("default"), safe=True)
            await Tortoise.close_connections()
            header = (
                f"-- generate_schemas(safe=True) for sequencer/store/models.py at commit {rev}\n"
                f"-- ({dialect}; tortoise-orm 1.1.9), by tests/schemas/capture.py {rev}\n"
            )
            (HERE / f"{rev}.{dialect}.sql").write_text(header + ddl + "\n")


if __name__ == "__main__":
    rev = sys.argv[1]
    models = subprocess.run(
        ["git", "show", f"{rev}:sequencer/store/models.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE,
    ).stdout
    asyncio.run(capture(rev, models))
