"""The seed topology on one machine: every host a Linux network namespace.

::

    sender ──edge── front ──data── data (ZEO server, Redis)
                              │
                     back1, back2, ... (one ``plonecelery worker`` each)
                              │
                            blog ── blog (the demo Ghost blog's API)

Three segments (bridges), and a host reaches only the segments it is plugged into:

* ``data`` (10.211.1.0/24): data .1, front .2, worker hosts .11, .12, ...
* ``blog`` (10.211.2.0/24): blog .1, worker hosts .11, .12, ...
* ``edge`` (10.211.3.0/24): the webhook sender .1, front .2

So ``front`` (the Plone WSGI instance) has no route to the blog: it verifies webhooks and
queues imports; the workers fetch the posts. The addresses exist only inside the run's
namespaces (see :mod:`.netns`), never in the machine's own network.

Used by ``tests/topology``; from Python::

    topo = SeedTopology(base_dir=tmp_path, posts=40).start()   # back1, back2 included
    answer = topo.send_webhook(topo.post_id(0))                # from sender to front
    topo.kill_worker("back1")                                  # SIGKILL, whole worker
    topo.add_worker_host("back3")
    topo.stop()

``python -m collective.plonecelery.devtools.topology blog --host H --port P --posts N``
runs the stand-in blog with N extra generated posts (what the ``blog`` host runs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import instance
from .demo_blog import DEMO_KEY
from .demo_blog import BlogServer
from .demo_blog import DemoBlog
from .demo_blog import source_settings
from .demo_blog import webhook_body
from .netns import Network

SUBNETS = {"data": "10.211.1", "blog": "10.211.2", "edge": "10.211.3"}
#: Fixed hosts: {host: {segment: last octet}}; worker hosts get .11, .12, ... on data and blog.
HOSTS = {
    "data": {"data": 1},
    "front": {"data": 2, "edge": 2},
    "blog": {"blog": 1},
    "sender": {"edge": 1},
}
ZEO_PORT = 8100
REDIS_PORT = 6379
HTTP_PORT = 8080
BLOG_PORT = 2368
SITE_ID = "Plone"
SOURCE_ID = "topo-blog"
FOLDER = "news"
ADMIN = "admin"


def post_id(number: int) -> str:
    """The Ghost id (24 hex digits) of generated post ``number``."""
    return f"70b0{number:020x}"


class GeneratedBlog(DemoBlog):
    """The demo blog plus ``posts`` generated posts; an API read of a post numbered in
    ``slow`` takes ``delay`` seconds (so that imports still run when a worker host dies)."""

    def __init__(self, *, posts: int, delay: float = 0.0, slow: range = range(0), **kwargs):
        super().__init__(**kwargs)
        self.delay = delay
        self.slow = {post_id(number) for number in slow}
        for number in range(posts):
            stamp = f"2024-06-01T09:{number // 60:02d}:{number % 60:02d}.000+00:00"
            self._posts[post_id(number)] = {
                "id": post_id(number),
                "slug": f"generated-post-{number}",
                "title": f"Generated post {number}",
                "html": f"<p>Post number {number} of the topology test.</p>",
                "custom_excerpt": None,
                "tags": ["Generated"],
                "authors": ["Ada Lovelace"],
                "status": "published",
                "published_at": stamp,
                "updated_at": stamp,
                "color": (number % 256, 80, 160),
            }

    def read(self, post_id: str, *, include: set[str]):
        if post_id in self.slow:
            time.sleep(self.delay)
        return super().read(post_id, include=include)


def serve_blog(
    *, host: str, port: int, posts: int, delay: float, slow: range = range(0)
) -> BlogServer:
    blog = GeneratedBlog(posts=posts, delay=delay, slow=slow, key=DEMO_KEY)
    server = BlogServer((host, port), blog)
    blog.base_url = server.url
    return server.start()


class SeedTopology:
    """ZEO + Redis on ``data``, Plone on ``front``, workers on ``back<n>``, a blog on ``blog``."""

    def __init__(
        self,
        *,
        base_dir: str | os.PathLike,
        posts: int = 40,
        blog_delay: float = 1.0,
        slow_posts: range = range(0),
        worker_hosts: tuple[str, ...] = ("back1", "back2"),
        concurrency: int = 1,
        environment: Mapping[str, str] | None = None,
    ):
        self.base_dir = Path(base_dir).absolute()
        self.log_dir = self.base_dir / "log"
        self.posts = posts
        self.blog_delay = blog_delay
        self.slow_posts = slow_posts
        self.initial_workers = worker_hosts
        self.concurrency = concurrency
        self.admin_password = secrets.token_urlsafe(12)
        self.webhook_secret = secrets.token_urlsafe(16)
        self.net: Network | None = None
        self.processes: dict[str, subprocess.Popen] = {}
        self.workers: dict[str, subprocess.Popen] = {}
        self.extra_environment = dict(environment or {})
        self._worker_octet = 10

    # -- addresses ----------------------------------------------------------------

    @staticmethod
    def address(host: str, segment: str, octet: int) -> str:
        return f"{SUBNETS[segment]}.{octet}"

    @property
    def data_ip(self) -> str:
        return self.address("data", "data", HOSTS["data"]["data"])

    @property
    def blog_ip(self) -> str:
        return self.address("blog", "blog", HOSTS["blog"]["blog"])

    @property
    def front_ip(self) -> str:
        return self.address("front", "edge", HOSTS["front"]["edge"])

    @property
    def site_url(self) -> str:
        return f"http://{self.front_ip}:{HTTP_PORT}/{SITE_ID}"

    @property
    def blog_url(self) -> str:
        return f"http://{self.blog_ip}:{BLOG_PORT}"

    def post_id(self, number: int) -> str:
        return post_id(number)

    def environment(self) -> dict[str, str]:
        """The ``<environment>`` of every host's zope.conf."""
        return {
            "CELERY_BROKER_URL": f"redis://{self.data_ip}:{REDIS_PORT}/0",
            "CELERY_RESULT_BACKEND": f"redis://{self.data_ip}:{REDIS_PORT}/1",
            # A worker host that dies leaves its messages unacknowledged: Redis hands
            # them to another worker after the visibility timeout (an hour by default).
            # Kombu looks for them every unacked_restore_interval * _throttle seconds
            # (10 * 10 by default): every 2 s here.
            "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps(
                {
                    "visibility_timeout": 10,
                    "unacked_restore_interval": 2,
                    "unacked_restore_throttle": 1,
                }
            ),
            "PLONECELERY_SERVER_URL": self.site_url,
            "PLONECELERY_OUTBOX_GRACE": "5",
            "PLONECELERY_OUTBOX_RELAY_INTERVAL": "2",
            "PLONECELERY_IMPORT_BACKOFF": "0.5",
            **self.extra_environment,
        }

    # -- start and stop -----------------------------------------------------------

    def start(self) -> SeedTopology:
        from .netns import remove_stale

        remove_stale()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.net = Network()
        try:
            for segment in SUBNETS:
                self.net.add_bridge(segment)
            for host, plugs in HOSTS.items():
                self._add_host(host, plugs)
            self._start_data()
            self._start_blog()
            self._start_front()
            self.configure_source()
            for host in self.initial_workers:
                self.add_worker_host(host, wait=False)
            for host in self.initial_workers:
                self.wait_for_worker(host)
        except BaseException:
            self.stop()
            raise
        return self

    def _add_host(self, host: str, plugs: Mapping[str, int]) -> None:
        self.net.add_host(host)
        for segment, octet in plugs.items():
            self.net.connect(host, segment, f"{self.address(host, segment, octet)}/24")

    def _spawn(self, host: str, name: str, args, *, env=None) -> subprocess.Popen:
        process = instance.processes.spawn(
            self.net.exec_args(host, args),
            log_file=self.log_dir / f"{name}.log",
            env={**os.environ, **(env or {})},
        )
        self.processes[name] = process
        return process

    def _wait(self, host, address, port, name, *, timeout=60) -> None:
        self.net.wait_for_port(
            host,
            address,
            port,
            timeout=timeout,
            process=self.processes[name],
            log_file=self.log_dir / f"{name}.log",
        )

    def _start_data(self) -> None:
        redis = self._spawn(
            "data",
            "redis",
            ["redis-server", "--bind", self.data_ip, "--port", str(REDIS_PORT), "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--dir", str(self.base_dir)],
        )  # fmt: skip
        del redis
        var = self.base_dir / "data"
        conf = instance.write_zeo_conf(
            path=var / "zeo.conf", var_dir=var, host=self.data_ip, port=ZEO_PORT
        )
        self._spawn("data", "zeo", [instance.bin_path("runzeo"), "-C", conf])
        self._wait("data", self.data_ip, REDIS_PORT, "redis")
        self._wait("data", self.data_ip, ZEO_PORT, "zeo")

    def _start_blog(self) -> None:
        self._spawn(
            "blog",
            "blog",
            [sys.executable, "-m", __name__, "blog", "--host", self.blog_ip,
             "--port", str(BLOG_PORT), "--posts", str(self.posts),
             "--delay", str(self.blog_delay),
             "--slow", f"{self.slow_posts.start}-{self.slow_posts.stop}"],
        )  # fmt: skip
        self._wait("blog", self.blog_ip, BLOG_PORT, "blog")

    def zope_conf(self, host: str) -> Path:
        """Write ``host``'s zope.conf (its own var/; blobs shared on this one disk)."""
        home = self.base_dir / host
        return instance.write_zope_conf(
            path=home / "etc" / "zope.conf",
            zeo_address=f"{self.data_ip}:{ZEO_PORT}",
            var_dir=home / "var",
            blob_dir=self.base_dir / "data" / "blobstorage",
            environment=self.environment(),
        )

    def _start_front(self) -> None:
        conf = self.zope_conf("front")
        created = subprocess.run(
            self.net.exec_args(
                "front", [sys.executable, "-m", __name__, "prepare-site", "--zope-conf", conf]
            ),
            env={**os.environ, "PLONECELERY_ADMIN_PASSWORD": self.admin_password},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
        (self.log_dir / "prepare-site.log").write_bytes(created.stdout)
        if created.returncode != 0:
            raise RuntimeError(
                "creating the Plone site on front failed:\n"
                + created.stdout.decode(errors="replace")[-4000:]
            )
        ini = instance.write_zope_ini(
            path=self.base_dir / "front" / "etc" / "zope.ini",
            zope_conf=conf,
            host=self.front_ip,
            port=HTTP_PORT,
        )
        self._spawn("front", "front", [instance.bin_path("runwsgi"), ini])
        self._wait("sender", self.front_ip, HTTP_PORT, "front", timeout=300)

    def add_worker_host(self, host: str, *, wait: bool = True) -> subprocess.Popen:
        """A new namespace on the data and blog segments, running one worker."""
        if self.net is None:
            raise RuntimeError("start() the topology first")
        self._worker_octet += 1
        self._add_host(host, {"data": self._worker_octet, "blog": self._worker_octet})
        conf = self.zope_conf(host)
        worker = self._spawn(
            host,
            host,
            [instance.bin_path("plonecelery"), "--zope-conf", conf, "worker", "-l", "info",
             "-c", str(self.concurrency), "-P", "prefork", "-n", f"{host}@topology"],
        )  # fmt: skip
        self.workers[host] = worker
        if wait:
            self.wait_for_worker(host)
        return worker

    def worker_log(self, host: str) -> str:
        path = self.log_dir / f"{host}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_worker(self, host: str, *, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while "ready." not in self.worker_log(host):
            worker = self.workers[host]
            if worker.poll() is not None:
                raise RuntimeError(
                    f"the worker on {host} exited with {worker.returncode}:\n"
                    + instance.tail(self.log_dir / f"{host}.log", lines=40)
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker on {host} was not ready within {timeout} s")
            time.sleep(0.2)

    def kill_worker(self, host: str) -> None:
        """SIGKILL the whole worker of ``host`` (main process and pool) at once."""
        worker = self.workers[host]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)

    def stop(self) -> None:
        """Stop every process, then delete the namespaces (also after a failed start)."""
        for name in reversed(list(self.processes)):
            try:
                instance.stop_process(self.processes[name], timeout=10)
            except Exception:  # noqa: BLE001 - the namespaces go anyway
                pass
        self.processes.clear()
        self.workers.clear()
        if self.net is not None:
            self.net.destroy()
            self.net = None

    def __enter__(self) -> SeedTopology:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- what the sender (and the operator) does ------------------------------------

    def rest(self, method: str, path: str, **kwargs) -> Any:
        """A REST API call to front, from the sender host, as the site admin."""
        import httpx

        def call():
            with httpx.Client(
                auth=(ADMIN, self.admin_password),
                headers={"Accept": "application/json"},
                timeout=60,
            ) as client:
                return client.request(method, f"{self.site_url}/++api++{path}", **kwargs)

        return self.net.call("sender", call)

    def configure_source(self) -> None:
        """The blog source, through the REST API (as an admin would)."""
        settings = source_settings(
            blog_url=self.blog_url, source_id=SOURCE_ID, secret=self.webhook_secret, target=FOLDER
        )  # allow_private is on: the blog is on a private address
        response = self.rest("POST", "/@blog-sources", json=settings)
        if response.status_code >= 400:
            raise RuntimeError(f"could not create the blog source: {response.text}")

    def send_webhook(self, remote_id: str) -> dict[str, Any]:
        """A signed Ghost ``post.published`` webhook from sender to front; the 202 answer."""
        import httpx

        from ..blogs.verify.signatures import sign

        body = webhook_body(remote_id)
        headers = {"Content-Type": "application/json"}
        headers.update(sign(scheme="ghost", secret=self.webhook_secret, body=body))
        url = f"{self.site_url}/++api++/@blog-webhook/{SOURCE_ID}?event=post.published"
        response = self.net.call(
            "sender", httpx.post, url, content=body, headers=headers, timeout=60
        )
        if response.status_code != 202:
            raise RuntimeError(f"webhook for {remote_id}: {response.status_code} {response.text}")
        return response.json()

    def items(self, remote_id: str) -> list[dict[str, Any]]:
        """The News Items front's catalog holds for ``remote_id`` of the blog source."""
        response = self.rest(
            "GET",
            "/@search",
            params={
                "portal_type": "News Item",
                "plonecelery_remote_key": f"{SOURCE_ID}:{remote_id}",
            },
        )
        response.raise_for_status()
        return response.json()["items"]

    def news_count(self) -> int:
        response = self.rest(
            "GET", "/@search", params={"portal_type": "News Item", "path": f"/{SITE_ID}/{FOLDER}"}
        )
        response.raise_for_status()
        return response.json()["items_total"]

    def _redis(self, db: int, command: str, *args):
        import redis

        def call():
            client = redis.Redis(host=self.data_ip, port=REDIS_PORT, db=db, socket_timeout=10)
            try:
                return client.execute_command(command, *args)
            finally:
                client.close()

        return self.net.call("data", call)

    def result(self, task_id: str) -> dict[str, Any] | None:
        """The task's result in the backend (on data), as an operator would read it."""
        raw = self._redis(1, "GET", f"celery-task-meta-{task_id}")
        return json.loads(raw) if raw else None

    def queue_length(self, queue: str = "celery") -> int:
        """Messages waiting in ``queue`` (not those a worker has reserved)."""
        return int(self._redis(0, "LLEN", queue))


def prepare_site(zope_conf: str, admin_password: str) -> None:
    """Create the Plone site and its /news folder (boots Zope in this process), tuned for
    imports on several worker hosts at once (see "Sizing" in docs/deployment.rst):

    * News Items are not versioned: CMFEditions gives every new versioned item a history
      id from one counter (``portal_uidgenerator``), so any two creations running at once
      conflict, and the slower worker host keeps losing and retrying;
    * /news is unordered: an ordered folder rewrites its order list on every add.
    """
    import transaction
    from plone import api

    from ..worker.environment import zope_environment
    from ..worker.process import open_db
    from ..worker.process import use_database
    from .instance.site import SITE_PROFILES
    from .instance.site import _create_site_in_zope

    _create_site_in_zope(
        zope_conf=zope_conf,
        site_id=SITE_ID,
        title="Seed topology",
        admin_user=ADMIN,
        admin_password=admin_password,
        profiles=SITE_PROFILES,
    )
    db = open_db()  # the site creation closed Zope's database
    with use_database(db), zope_environment(site_path=f"/{SITE_ID}", userid=ADMIN) as portal:
        repository = api.portal.get_tool("portal_repository")
        repository.setVersionableContentTypes(
            [name for name in repository.getVersionableContentTypes() if name != "News Item"]
        )
        if FOLDER not in portal:
            folder = api.content.create(container=portal, type="Folder", id=FOLDER, title="News")
            folder.setOrdering("unordered")
        transaction.commit()
    db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    commands = parser.add_subparsers(dest="command", required=True)
    blog = commands.add_parser("blog", help="serve the demo blog with generated posts")
    blog.add_argument("--host", default="127.0.0.1")
    blog.add_argument("--port", type=int, default=BLOG_PORT)
    blog.add_argument("--posts", type=int, default=40)
    blog.add_argument("--delay", type=float, default=0.0, help="seconds per slow post read")
    blog.add_argument("--slow", default="0-0", help="slow posts: START-STOP (STOP excluded)")
    prepare = commands.add_parser("prepare-site", help="the Plone site and its /news folder")
    prepare.add_argument("--zope-conf", required=True)
    options = parser.parse_args(argv)
    if options.command == "prepare-site":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        prepare_site(options.zope_conf, os.environ["PLONECELERY_ADMIN_PASSWORD"])
        return 0
    start, stop = (int(part) for part in options.slow.split("-"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = serve_blog(
        host=options.host,
        port=options.port,
        posts=options.posts,
        delay=options.delay,
        slow=range(start, stop),
    )
    print(f"Blog with {options.posts} generated posts on {server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *args: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
