"""The transactional outbox: the store (:mod:`.records`) and the relay (:mod:`.relay`).

``collective.plonecelery.outbox.Outbox`` and ``.OutboxRecord`` are the class paths
that ZODBs written before the store moved into :mod:`.records` hold: keep them.
"""

from .records import Outbox  # noqa: F401
from .records import OutboxRecord  # noqa: F401
