"""The example application's migrations, as an application declares them.

Used by ``make demo`` and ``python -m api.db --migrations examples.app_migrations:MIGRATIONS status``.
The models are frozen copies made for the migration (not the application's live
models), so that later model changes cannot alter what an old migration does.
"""

from __future__ import annotations

import datetime

from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField

from api.db import Migration


class File(Model):
    name = CharField(max_length=255)
    size = IntegerField(default=0)
    created_at = DateTimeField(default=datetime.datetime.now)

    class Meta:
        table_name = "file"


class Task(Model):
    file = ForeignKeyField(File, backref="tasks", on_delete="CASCADE")
    process_duation = IntegerField(null=True)  # the typo a later migration fixes
    progress_msg = TextField(null=True)

    class Meta:
        table_name = "task"


MIGRATIONS = [
    Migration("create_file_and_task", lambda m: m.create_tables(File, Task), description="the first tables"),
    Migration(
        "add_file_source_type",
        lambda m: m.add_column(
            "file", "source_type", CharField(max_length=128, null=False, default="", index=True)
        ),
    ),
    ("rename_task_duration", lambda m: m.rename_column("task", "process_duation", "process_duration")),
    ("add_task_priority", lambda m: m.add_column("task", "priority", IntegerField(null=False, default=0))),
    ("index_task_priority", lambda m: m.add_index("task", ("priority",))),
]
