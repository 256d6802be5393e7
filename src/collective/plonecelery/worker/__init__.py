"""The worker side: the process (:mod:`.process`) and a task's Zope world (:mod:`.environment`)."""

from .environment import zope_environment  # noqa: F401
from .process import boot_zope  # noqa: F401
from .process import get_db  # noqa: F401
from .process import use_database  # noqa: F401
