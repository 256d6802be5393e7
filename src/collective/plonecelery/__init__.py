"""collective.plonecelery: Celery tasks that run inside Plone.

>>> from collective.plonecelery import task
>>> @task()
... def hello(context):
...     return context.Title()
"""

from .task import task  # noqa: F401
