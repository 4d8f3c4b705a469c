"""The ``database.dsn`` setting: parsed by libpq itself, never holding a password.

A password written in the config would be copied by Snakemake into ``.snakemake/metadata``,
its log and the report, so a dsn that holds one is refused when the config is validated (that
is, when the workflow is parsed, before any job runs). libpq's own parser
(``PQconninfoParse`` through :func:`psycopg2.extensions.parse_dsn`) reads the dsn, so every
form libpq accepts is covered: ``key=value`` pairs, ``postgresql://`` and ``postgres://``
URIs with a ``user:password@`` part, ``?password=`` query parameters and percent-encoding.
No message of this module ever repeats the dsn or a fragment of it.
"""

from __future__ import annotations

import os
import re

import psycopg2
import psycopg2.extensions

from vitalfm.errors import ConfigError

# What libpq reads from the environment when the dsn leaves it out (shown in messages).
_LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "service": "PGSERVICE",
}
_TARGET_KEYS = ("host", "port", "dbname", "user", "service", "sslmode")
_EXAMPLES = (
    "'host=db.example port=5432 dbname=mimic user=reader' or 'postgresql://reader@db.example/mimic'"
)
_PASSWORD_FIX = (
    "give the password to libpq instead, in the PGPASSWORD environment variable or a "
    "~/.pgpass file (mode 0600; or a passfile=... named in the dsn), and write the dsn "
    "without it{example}; a password in the config or on the command line would be stored by "
    "Snakemake in .snakemake/ and copied into logs and the report"
)


def _quiet(libpq_message: str) -> str:
    """libpq's reason without the fragments of the dsn it quotes (they may be a password)."""
    first = libpq_message.strip().splitlines()[0] if libpq_message.strip() else ""
    first = first.removeprefix("invalid dsn: ")
    first = re.sub(r'"([^"]*)"', lambda m: m[0] if m[1] == "=" else '"…"', first)
    return first.strip() or "unknown reason"


def parse_dsn(dsn: str) -> dict[str, str]:
    """The dsn's settings as libpq reads them ({} for an empty dsn).

    Raises :class:`ConfigError` if libpq cannot parse it; the message never quotes the dsn.
    """
    if not dsn or not dsn.strip():
        return {}
    try:
        return dict(psycopg2.extensions.parse_dsn(dsn))
    except psycopg2.ProgrammingError as err:
        raise ConfigError(
            f"config key database.dsn is not a connection string libpq can read "
            f"({_quiet(str(err))}; the value is not repeated here as it may hold a secret)",
            f"write it as {_EXAMPLES}, or leave it empty to use PGHOST, PGPORT, PGDATABASE "
            "and PGUSER",
        ) from None


def check_dsn(dsn: str) -> None:
    """Refuse a dsn that libpq cannot parse or that holds a password, in any form."""
    params = parse_dsn(dsn)
    if "password" in params:
        params.pop("password")
        example = _redacted(params)
        raise ConfigError(
            "config key database.dsn holds a password (refused: it would be stored on disk)",
            _PASSWORD_FIX.format(
                example=f" (here: dsn: {example!r})" if example else " (or leave it empty)"
            ),
        )


def _redacted(params: dict[str, str]) -> str:
    params = {k: v for k, v in params.items() if k != "password"}
    return psycopg2.extensions.make_dsn(**params) if params else ""


def redact_dsn(dsn: str) -> str:
    """``dsn`` safe for a log or an output file: unchanged if it holds no password, else its
    settings as libpq keyword pairs without the password; a dsn libpq cannot parse is not
    shown at all."""
    try:
        params = parse_dsn(dsn)
    except ConfigError:
        return "(a database.dsn libpq cannot parse)"
    return _redacted(params) if "password" in params else dsn


def connection_target(dsn: str) -> str:
    """Which server and database a connection goes to, for messages: host, port, dbname, user,
    service and sslmode from the dsn or libpq's environment variables, never a password."""
    try:
        params = parse_dsn(dsn)
    except ConfigError:
        return "(a database.dsn libpq cannot parse)"
    for key, var in _LIBPQ_ENV.items():
        if key not in params and os.environ.get(var):
            params[key] = os.environ[var]
    return " ".join(f"{k}={params[k]}" for k in _TARGET_KEYS if k in params) or "(libpq defaults)"
