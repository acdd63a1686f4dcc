"""Write the next migration after a change to sequencer/store/models.py:

    .venv/bin/python -m sequencer.store.migrations add_reply_count

tortoise's autodetector compares models.py with what the migrations before it build, and this
writes the difference as sequencer/store/migrations/NNNN_add_reply_count.py, formatted by ruff.
Nothing connects to a database.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from tortoise import Tortoise
from tortoise.migrations.writer import format_migration_name

from sequencer.store import db, schema

AFTERWARDS = """\
Read it before committing it with models.py:
- A new NOT NULL column is filled with the model's default in existing rows. If rows need
  another value, add an ops.RunSQL(...) after the AddField (see 0002_etiquette.py).
- A field renamed and changed at once comes out as RemoveField + AddField, which loses its
  data: make it ops.RenameField(model_name=..., old_name=..., new_name=...) and an AlterField.
- `.venv/bin/pytest tests/test_migrate.py` upgrades an old database through it."""


async def write(name: str) -> list[Path]:
    await Tortoise.init(db_url="sqlite://:memory:", modules=db.MODELS)
    try:
        writers = await schema.unmigrated_changes()
    finally:
        await Tortoise.close_connections()
    paths = []
    for writer in writers:
        writer.name = format_migration_name(int(writer.name.split("_", 1)[0]), name)
        paths.append(Path(writer.write()))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sequencer.store.migrations",
        description="Write the migration that brings the schema to what models.py says.",
    )
    parser.add_argument("name", help="what changed, in a few words: add_reply_count")
    paths = asyncio.run(write(parser.parse_args().name))
    if not paths:
        print("models.py and the migrations agree: nothing to write")
        return 0
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff:  # the dev extra has it; tortoise's writer output is not formatted
        files = [str(p) for p in paths]
        subprocess.run([ruff, "check", "--fix", "--quiet", "--select", "I,F401", *files])  # noqa: S603
        subprocess.run([ruff, "format", "--quiet", *files])  # noqa: S603
    for path in paths:
        print(f"wrote {path}")
    print(AFTERWARDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
