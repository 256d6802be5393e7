"""collective.plonecelery: Celery tasks that run inside Plone.

>>> from collective.plonecelery import task, report_progress
>>> @task()
... def hello(context):
...     report_progress(1, 1)
...     return context.Title()
"""

from .progress import report_progress  # noqa: F401
from .task import task  # noqa: F401
