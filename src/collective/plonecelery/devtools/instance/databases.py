"""Throwaway databases on a running PostgreSQL or MariaDB/MySQL server.

For RelStorage (:func:`.zopeconf.relstorage_section`) and for the SQLAlchemy broker
and result backend on a real database: each test run gets a database of its own,
dropped at the end::

    with PostgreSQLDatabase.fresh() as db:
        db.dsn             # "dbname=plonecelery_test_1a2b3c4d host=127.0.0.1 ..."
        db.url("sqla+")    # "sqla+postgresql+psycopg2://postgres@127.0.0.1:5432/plonecelery_test_..."

The drivers (psycopg2, PyMySQL) are imported only here, when a database is made:
install the ``postgresql``/``mysql`` extras, or ``relstorage`` (psycopg2).
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import quote

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class ServerDatabase:
    """A database ``name`` on a server; :meth:`create` and :meth:`drop` it."""

    #: SQLAlchemy's dialect and driver, as in ``postgresql+psycopg2://``.
    dialect = ""
    default_port = 0
    default_user = ""

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        user: str | None = None,
        password: str = "",
    ):
        if not _NAME.match(name):
            raise ValueError(f"Database name {name!r}: use lowercase letters, digits and _.")
        self.name = name
        self.host = host
        self.port = port or self.default_port
        self.user = user or self.default_user
        self.password = password

    @classmethod
    def fresh(cls, prefix: str = "plonecelery_test", **server) -> ServerDatabase:
        """A new, empty database with a unique name (created on the server)."""
        return cls(f"{prefix}_{uuid.uuid4().hex[:8]}", **server).create()

    def url(self, scheme_prefix: str = "") -> str:
        """The SQLAlchemy URL, after ``scheme_prefix`` (``sqla+`` brokers, ``db+`` results)."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"{scheme_prefix}{self.dialect}://{auth}@{self.host}:{self.port}/{self.name}"

    def create(self) -> ServerDatabase:
        self._execute(f"CREATE DATABASE {self.name}")
        return self

    def drop(self) -> None:
        """Drop the database, and end connections left to it."""
        self._execute(self._drop_statement())

    def _drop_statement(self) -> str:
        return f"DROP DATABASE IF EXISTS {self.name}"

    def _execute(self, statement: str) -> None:
        raise NotImplementedError

    def __enter__(self) -> ServerDatabase:
        return self

    def __exit__(self, *exc_info) -> None:
        self.drop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.host}:{self.port}>"


class PostgreSQLDatabase(ServerDatabase):
    """A database on PostgreSQL, through psycopg2."""

    #: SQLAlchemy 2.1 takes a bare ``postgresql://`` for psycopg (3): name psycopg2.
    dialect = "postgresql+psycopg2"
    default_port = 5432
    default_user = "postgres"

    @property
    def dsn(self) -> str:
        """The libpq connection string (RelStorage's ``<postgresql> dsn``)."""
        parts = {"dbname": self.name, "host": self.host, "port": self.port, "user": self.user}
        if self.password:
            parts["password"] = self.password
        return " ".join(f"{key}={value}" for key, value in parts.items())

    def _drop_statement(self) -> str:
        return super()._drop_statement() + " WITH (FORCE)"

    def _execute(self, statement: str) -> None:
        import psycopg2

        connection = psycopg2.connect(
            dbname="postgres",
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password or None,
            connect_timeout=10,
        )
        try:
            connection.autocommit = True  # CREATE/DROP DATABASE refuse transactions
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()


class MySQLDatabase(ServerDatabase):
    """A database on MariaDB or MySQL, through PyMySQL."""

    dialect = "mysql+pymysql"
    default_port = 3306
    default_user = "root"

    def _execute(self, statement: str) -> None:
        import pymysql

        connection = pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            connect_timeout=10,
            autocommit=True,
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()
