"""What the live server says about itself: engine, flavour, version, extensions."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import peewee


@dataclass(frozen=True)
class ServerInfo:
    """One server's identity as read from a live connection."""

    engine: str  # postgres, mysql, sqlite: the protocol family
    flavour: str  # postgres, mysql, mariadb, sqlite: what actually answered
    version: tuple[int, ...]  # numeric, comparable: (18, 6), (10, 11, 19)
    version_string: str  # as the server reports it
    database: str  # the current database name (or SQLite file)
    extensions: dict[str, str] = field(default_factory=dict)  # installed: name -> version
    available_extensions: dict[str, str] = field(default_factory=dict)  # installable: name -> default version

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = self.version_text
        return data


def parse_version(text: str) -> tuple[int, ...]:
    """The leading dotted number of ``text`` as a tuple: ``"10.11.19-MariaDB-0"`` -> ``(10, 11, 19)``."""
    match = re.search(r"(\d+(?:\.\d+)*)", text)
    if not match:
        return (0,)
    return tuple(int(part) for part in match.group(1).split("."))


def server_info(database: peewee.Database) -> ServerInfo:
    """Read the server's identity through ``database`` (opens a connection if needed)."""
    from api.db.engines import engine_for

    return engine_for(database).read_server_info()
