"""Creating the Plone site, in a process of its own (Zope boots there)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .processes import open_log
from .processes import tail

logger = logging.getLogger(__name__)

#: Profiles of a Classic UI Plone site, as the "Create a Plone site" form
#: installs them (minus plone.app.caching, which is not a dependency), plus
#: plone.restapi and this add-on.
SITE_PROFILES = (
    "plone.app.contenttypes:default",
    "plonetheme.barceloneta:default",
    "plone.restapi:default",
    "collective.plonecelery:default",
)


def create_site(
    *,
    zope_conf: str | os.PathLike,
    site_id: str = "Plone",
    title: str = "Plone site",
    admin_user: str = "admin",
    admin_password: str,
    extra_profiles: Sequence[str] = (),
    log_file: str | os.PathLike | None = None,
    timeout: float = 300,
) -> bool:
    """Create the Plone site (and the Zope admin user) if they are missing.

    Runs in a subprocess, so the caller never boots Zope. Installs Classic UI
    with plone.app.contenttypes, plone.restapi and collective.plonecelery
    (:data:`SITE_PROFILES`), then ``extra_profiles``. The admin user is added
    to the Zope root with the Manager role; an existing user keeps its
    password. Returns True if the site was created, False if it existed.

    >>> create_site(zope_conf="etc/zope.conf", admin_password="secret")  # doctest: +SKIP
    True
    """
    if not admin_password:
        raise ValueError("create_site needs a non-empty admin_password.")
    args = [
        sys.executable,
        "-m",
        "collective.plonecelery.devtools.instance",
        "create-site",
        "--zope-conf",
        str(Path(zope_conf).absolute()),
        "--site-id",
        site_id,
        "--title",
        title,
        "--admin-user",
        admin_user,
    ]
    for profile in extra_profiles:
        args += ["--profile", profile]
    # The password goes through the environment, not argv (visible in ps).
    env = dict(os.environ, PLONECELERY_ADMIN_PASSWORD=admin_password)
    log = open_log(log_file)
    try:
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log if log else subprocess.PIPE,
            env=env,
            timeout=timeout,
            check=False,
        )
    finally:
        if log is not None:
            log.close()
    if result.returncode != 0:
        details = (
            result.stderr.decode("utf-8", "replace")[-5000:]
            if log is None
            else tail(log_file, lines=40)
        )
        raise RuntimeError(
            f"Creating the Plone site {site_id!r} failed "
            f"(exit code {result.returncode}):\n{details}"
        )
    last_line = result.stdout.decode("utf-8", "replace").strip().splitlines()[-1]
    return bool(json.loads(last_line)["created"])


def _create_site_in_zope(
    *,
    zope_conf: str,
    site_id: str,
    title: str,
    admin_user: str,
    admin_password: str,
    profiles: Sequence[str],
) -> bool:
    """Body of ``create-site``: boots Zope in this process."""
    if "Testing" in sys.modules:
        raise RuntimeError(
            "The 'Testing' package was imported before Zope started: Zope would "
            "open Testing/custom_zodb.py's DemoStorage instead of zope.conf's "
            "database. Run create-site in a fresh process (create_site())."
        )
    import Zope2

    from ...worker.process import start_zope

    start_zope(zope_conf)
    # Zope2.app() must come before any import of Testing (makerequest below):
    # importing Testing sets cfg.testinghome, and Zope's startup then prefers
    # Testing/custom_zodb.py (a DemoStorage) to zope.conf's ZEO database.
    app = Zope2.app()

    import transaction
    from AccessControl.SecurityManagement import newSecurityManager
    from AccessControl.SecurityManagement import noSecurityManager
    from Testing.makerequest import makerequest
    from zope.component.hooks import setSite
    from zope.globalrequest import setRequest

    app = makerequest(app)
    setRequest(app.REQUEST)
    try:
        root_users = app.acl_users
        if root_users.getUserById(admin_user) is None:
            root_users.userFolderAddUser(admin_user, admin_password, ["Manager"], [])
            transaction.commit()
            logger.info("Added Zope admin user %r.", admin_user)
        if site_id in app.objectIds():
            logger.info("Site %r exists already.", site_id)
            return False

        from Products.CMFPlone.factory import addPloneSite

        # Owner of the site and its content is the admin, not "System".
        user = root_users.getUserById(admin_user).__of__(root_users)
        newSecurityManager(None, user)
        addPloneSite(
            app,
            site_id,
            title=title,
            extension_ids=list(profiles),
            default_language="en",
        )
        transaction.get().note(f"Created Plone site {site_id} (collective.plonecelery)")
        transaction.commit()
        logger.info("Created Plone site %r with %s.", site_id, ", ".join(profiles))
        return True
    except BaseException:
        transaction.abort()
        raise
    finally:
        noSecurityManager()
        setSite(None)
        setRequest(None)
        app._p_jar.close()
        app._p_jar.db().close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m collective.plonecelery.devtools.instance create-site --zope-conf PATH``.

    The admin password comes from ``--admin-password`` or the
    ``PLONECELERY_ADMIN_PASSWORD`` variable. Prints ``{"created": true|false}``
    as the last line of stdout.
    """
    parser = argparse.ArgumentParser(
        prog="python -m collective.plonecelery.devtools.instance",
        description="Local Plone instance helpers of collective.plonecelery.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser(
        "create-site", help="Create the admin user and the Plone site if missing."
    )
    create.add_argument("--zope-conf", required=True, help="path of zope.conf")
    create.add_argument("--site-id", default="Plone")
    create.add_argument("--title", default="Plone site")
    create.add_argument("--admin-user", default="admin")
    create.add_argument(
        "--admin-password",
        default=os.environ.get("PLONECELERY_ADMIN_PASSWORD"),
        help="default: $PLONECELERY_ADMIN_PASSWORD",
    )
    create.add_argument(
        "--profile",
        action="append",
        default=[],
        help="extra GenericSetup profile to install (repeatable)",
    )
    options = parser.parse_args(argv)
    if not options.admin_password:
        parser.error("give --admin-password or set PLONECELERY_ADMIN_PASSWORD")
    if not Path(options.zope_conf).is_file():
        parser.error(f"{options.zope_conf} does not exist")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
    )
    created = _create_site_in_zope(
        zope_conf=options.zope_conf,
        site_id=options.site_id,
        title=options.title,
        admin_user=options.admin_user,
        admin_password=options.admin_password,
        profiles=[*SITE_PROFILES, *options.profile],
    )
    print(json.dumps({"created": created}), flush=True)
    return 0
