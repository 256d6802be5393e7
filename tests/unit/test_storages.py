"""ZEO or RelStorage: the zope.conf the devtools write, the ZEO-only helpers, the databases."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from ZODB import DB
from ZODB.MappingStorage import MappingStorage

from collective.plonecelery import internals
from collective.plonecelery import zeo
from collective.plonecelery.devtools.instance import MySQLDatabase
from collective.plonecelery.devtools.instance import PostgreSQLDatabase
from collective.plonecelery.devtools.instance import ZeoTLS
from collective.plonecelery.devtools.instance import write_zeo_conf
from collective.plonecelery.devtools.instance import write_zope_conf
from collective.plonecelery.worker.process import forget_inherited_broker_connections


def load_zope_conf(path: Path):
    """Parse ``path`` with Zope's own schema, as ``runwsgi`` does (nothing opened)."""
    from Zope2.Startup.options import ZopeWSGIOptions

    options = ZopeWSGIOptions(configfile=str(path))
    options.load_schema()
    options.load_configfile()
    return options.configroot


def test_relstorage_zope_conf_is_valid_and_history_free(tmp_path):
    dsn = "dbname=plone_$x host=127.0.0.1 user=plone"
    path = write_zope_conf(
        path=tmp_path / "etc" / "zope.conf", var_dir=tmp_path / "var", relstorage_dsn=dsn
    )
    text = path.read_text()
    assert "%import relstorage" in text and "ZEO" not in text
    storage = load_zope_conf(path).databases[0].config.storage.config
    assert storage.keep_history is False
    assert storage.shared_blob_dir is False
    assert storage.blob_dir == str(tmp_path / "var" / "blobcache")
    assert storage.adapter.config.dsn == dsn  # "$$" in the file, "$" once read


def test_zeo_zope_conf_is_valid(tmp_path):
    path = write_zope_conf(
        path=tmp_path / "etc" / "zope.conf",
        var_dir=tmp_path / "var",
        zeo_address="127.0.0.1:8100",
        blob_dir=tmp_path / "var" / "blobstorage",
    )
    storage = load_zope_conf(path).databases[0].config.storage.config
    assert storage.server_sync is True and storage.shared_blob_dir is True


def test_zeo_tls_sections(tmp_path):
    # Parsing them would load the certificates: test_security_zeo_tls.py does, with real ones.
    certs = tmp_path / "ce$rts"
    tls = ZeoTLS(ca=certs / "ca.pem", certificate=certs / "c.pem", key=certs / "c.key")
    server = write_zeo_conf(
        path=tmp_path / "zeo.conf", var_dir=tmp_path / "var", host="127.0.0.1", port=8100, tls=tls
    ).read_text()
    client = write_zope_conf(
        path=tmp_path / "etc" / "zope.conf",
        var_dir=tmp_path / "var",
        zeo_address="127.0.0.1:8100",
        blob_dir=tmp_path / "var" / "blobstorage",
        zeo_tls=tls,
    ).read_text()
    for text, closing in ((server, "</zeo>"), (client, "</clientstorage>")):
        ssl = text[text.index("<ssl>") : text.index(closing)]
        assert f"authenticate {tmp_path}/ce$$rts/ca.pem" in ssl
        assert f"certificate {tmp_path}/ce$$rts/c.pem" in ssl
        assert f"key {tmp_path}/ce$$rts/c.key" in ssl
    assert "server-hostname localhost" in client and "server-hostname" not in server


@pytest.mark.parametrize(
    "storage",
    [{}, {"zeo_address": "127.0.0.1:8100", "relstorage_dsn": "dbname=x"}, {"zeo_address": "a:1"}],
)
def test_zope_conf_needs_one_storage(tmp_path, storage):
    with pytest.raises(ValueError):
        write_zope_conf(path=tmp_path / "zope.conf", var_dir=tmp_path / "var", **storage)


def test_zeo_helpers_leave_other_storages_alone(caplog):
    db = DB(MappingStorage())
    try:
        with caplog.at_level(logging.WARNING):
            zeo.forget_oids_on_reconnect(db)
            zeo.warn_without_server_sync(db)
        assert not hasattr(db.storage, "notify_connected")
        assert not caplog.records
    finally:
        db.close()


def test_relstorage_is_not_taken_for_a_zeo_client():
    from relstorage.storage import RelStorage

    assert not hasattr(RelStorage, "notify_connected")
    assert not hasattr(RelStorage, "server_sync")


def test_database_urls_and_dsn():
    pg = PostgreSQLDatabase("plonecelery_test_1", password="p@ss")
    assert (
        pg.url("sqla+")
        == "sqla+postgresql+psycopg2://postgres:p%40ss@127.0.0.1:5432/plonecelery_test_1"
    )
    assert (
        pg.dsn == "dbname=plonecelery_test_1 host=127.0.0.1 port=5432 user=postgres password=p@ss"
    )
    my = MySQLDatabase("plonecelery_test_1", host="db", port=3307)
    assert my.url("db+") == "db+mysql+pymysql://root@db:3307/plonecelery_test_1"


@pytest.mark.parametrize("name", ["Plone", "a-b", "x; DROP DATABASE y", ""])
def test_database_names_are_plain(name):
    with pytest.raises(ValueError):
        PostgreSQLDatabase(name)


def test_pool_processes_get_their_own_broker_connections(tmp_path):
    from kombu import Connection

    with Connection(f"sqla+sqlite:///{tmp_path}/broker.sqlite") as connection:
        connection.default_channel.queue_declare("q")
        engines = internals.sqlalchemy_broker_engines()
        assert engines
        pools = [engine.pool for engine in engines]
        forget_inherited_broker_connections()
        assert all(engine.pool is not pool for engine, pool in zip(engines, pools, strict=True))
