from setuptools import find_namespace_packages
from setuptools import setup

long_description = "\n\n".join(
    [open("README.rst").read(), open("CHANGES.rst").read()]
)

setup(
    name="collective.plonecelery",
    version="1.0.0a1",
    description="Celery under Plone: Zope-aware tasks, a transactional outbox, blog webhooks.",
    long_description=long_description,
    long_description_content_type="text/x-rst",
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Environment :: Web Environment",
        "Framework :: Plone",
        "Framework :: Plone :: 6.2",
        "Framework :: Plone :: Addon",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
    ],
    keywords="Plone Celery ZEO tasks webhooks",
    license="GPL-2.0-only",
    packages=find_namespace_packages("src", include=["collective.*"]),
    package_dir={"": "src"},
    include_package_data=True,
    zip_safe=False,
    python_requires=">=3.11",
    install_requires=[
        "setuptools",
        "Products.CMFPlone>=6.2",
        "plone.api",
        "plone.restapi",
        "plone.app.dexterity",
        "ZEO",
        "celery[redis,sqlalchemy]>=5.5",
        "kombu>=5.5",
        "SQLAlchemy",
        "cryptography",
        "httpx",
        "feedparser",
        "nh3",
        "ada-url",
        "standardwebhooks",
        "prometheus_client",
        "waitress",
    ],
    extras_require={
        # RelStorage on PostgreSQL instead of ZEO (docs/deployment.rst).
        "relstorage": ["RelStorage[postgresql]"],
        # SQLAlchemy brokers and result backends on real databases.
        "postgresql": ["psycopg2"],
        "mysql": ["PyMySQL"],
        "test": [
            "plone.app.testing",
            "plone.app.contenttypes",
            # A Volto site for the Volto blocks test (tests/integration/test_import_volto.py).
            "plone.volto",
            "pytest",
            "pytest-httpserver",
            "pytest-timeout",
            "zope.pytestlayer",
            "ruff",
            "import-linter",
            "hypothesis",
            # The OpenAPI description checked against a real instance
            # (tests/integration/test_api_schemathesis.py); PyYAML reads the document.
            "schemathesis",
            "PyYAML",
            # The database and broker matrix (PLONECELERY_TEST_DATABASE, _BROKER).
            "RelStorage[postgresql]",
            "psycopg2",
            "PyMySQL",
            # Packaging checks (tests/packaging): build, check-manifest, twine.
            "build",
            "check-manifest",
            "twine",
            # Browser tests of the control panels (tests/integration/test_panels_browser.py),
            # against the system's chromium: no browser download.
            "playwright",
            # Flower against the test brokers (tests/integration/test_flower.py).
            "flower",
            # The tracing test (tests/integration/test_tracing.py): the "tracing" extra.
            "opentelemetry-api",
            "opentelemetry-sdk",
            "opentelemetry-instrumentation-celery",
            "opentelemetry-exporter-otlp-proto-http",
        ],
        # OpenTelemetry traces from the queuing request to the task's run (tracing.py).
        "tracing": [
            "opentelemetry-api",
            "opentelemetry-sdk",
            "opentelemetry-instrumentation-celery",
            "opentelemetry-exporter-otlp-proto-http",
        ],
        "docs": ["Sphinx"],
    },
    entry_points={
        "z3c.autoinclude.plugin": ["target = plone"],
        "console_scripts": [
            "plonecelery = collective.plonecelery.cli:main",
        ],
        "paste.filter_factory": [
            "utf8paths = collective.plonecelery.restapi.wsgi:filter_factory",
        ],
        "plonecelery.tasks": [
            "deliveries = collective.plonecelery.blogs.deliveries",
            "importer = collective.plonecelery.blogs.importer",
            "outbox = collective.plonecelery.outbox.relay",
        ],
    },
)
