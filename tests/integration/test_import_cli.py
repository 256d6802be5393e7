"""`plonecelery import SOURCE --all`: every post of a blog, imported by the worker."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
import transaction
from plone import api

from collective.plonecelery.blogs import importer
from collective.plonecelery.blogs import storage
from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.devtools import demo_blog as blog
from collective.plonecelery.devtools.instance import bin_path
from collective.plonecelery.devtools.instance import free_port

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def demo_blog():
    server = blog.serve(port=free_port())
    yield server
    server.shutdown()


def test_import_all_posts_from_the_command_line(harness, demo_blog):
    source_id = f"cli-{uuid.uuid4().hex[:6]}"
    folder_id = f"blog-{source_id}"
    with harness.session(user="admin") as portal:
        api.content.create(container=portal, type="Folder", id=folder_id, title="Blog")
        importer.create_import_user(portal)
        settings = blog.source_settings(
            blog_url=demo_blog.url, source_id=source_id, secret="s3cret", target=folder_id
        )
        storage.add_source(SourceConfig.from_dict(settings), portal=portal)
        transaction.commit()
    published = len([p for p in demo_blog.blog.list_all() if p["status"] == "published"])

    completed = subprocess.run(
        [
            str(bin_path("plonecelery")),
            "--zope-conf",
            str(harness.zope_conf),
            "import",
            source_id,
            "--all",
            "--site",
            harness.site_id,
        ],
        env={**os.environ, **harness.environment, **harness.worker_env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "queued the import" in completed.stdout

    deadline = time.monotonic() + 120
    items = []
    while time.monotonic() < deadline:
        with harness.session() as portal:
            items = portal[folder_id].objectIds()
        if len(items) >= published:
            break
        time.sleep(1)
    assert published > 1
    assert len(items) == published


def test_import_of_an_unknown_source_fails_clearly(harness):
    completed = subprocess.run(
        [
            str(bin_path("plonecelery")),
            "--zope-conf",
            str(harness.zope_conf),
            "import",
            "no-such-source",
            "--all",
            "--site",
            harness.site_id,
        ],
        env={**os.environ, **harness.environment, **harness.worker_env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 1
    assert "no-such-source" in completed.stderr
