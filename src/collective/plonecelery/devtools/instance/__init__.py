"""Run a local ZEO + Plone + Celery worker stack from Python.

Used by ``make run`` (:mod:`collective.plonecelery.devtools.devserver`), by this
package's integration tests, and meant for add-on developers' own test
layers. Every function starts real processes from the current virtualenv
(``runzeo``, ``runwsgi``, ``plonecelery``) and never imports Zope itself, so
callers stay light::

    from collective.plonecelery.devtools import instance

    zeo = instance.start_zeo(var_dir=tmp / "var")
    conf = instance.write_zope_conf(
        path=tmp / "etc" / "zope.conf",
        zeo_address=zeo.address,
        var_dir=tmp / "var",
        blob_dir=zeo.blob_dir,
        environment={"CELERY_BROKER_URL": "redis://localhost:6379/0"},
    )
    instance.create_site(zope_conf=conf, admin_password="secret")
    port = instance.free_port()
    ini = instance.write_zope_ini(
        path=tmp / "etc" / "zope.ini", zope_conf=conf, host="127.0.0.1", port=port
    )
    wsgi = instance.start_wsgi(zope_ini=ini, host="127.0.0.1", port=port)
    worker = instance.start_worker(zope_conf=conf)
    ...
    instance.stop_process(worker)
    instance.stop_process(wsgi)
    zeo.stop()

``python -m collective.plonecelery.devtools.instance create-site --zope-conf etc/zope.conf``
creates the Plone site from the command line (see :func:`.site.main`).

RelStorage on PostgreSQL instead of ZEO: a database (:class:`PostgreSQLDatabase`) and
``write_zope_conf(relstorage_dsn=db.dsn, ...)``; no server process to start.
"""

from .databases import MySQLDatabase  # noqa: F401
from .databases import PostgreSQLDatabase  # noqa: F401
from .processes import bin_path  # noqa: F401
from .processes import ensure_port_free  # noqa: F401
from .processes import free_port  # noqa: F401
from .processes import port_is_open  # noqa: F401
from .processes import start_worker  # noqa: F401
from .processes import start_wsgi  # noqa: F401
from .processes import stop_process  # noqa: F401
from .processes import tail  # noqa: F401
from .processes import wait_for_port  # noqa: F401
from .site import SITE_PROFILES  # noqa: F401
from .site import create_site  # noqa: F401
from .zeoserver import ZEOServer  # noqa: F401
from .zeoserver import start_zeo  # noqa: F401
from .zeoserver import write_zeo_conf  # noqa: F401
from .zopeconf import ZeoTLS  # noqa: F401
from .zopeconf import write_zope_conf  # noqa: F401
from .zopeconf import write_zope_ini  # noqa: F401
