"""Demo helpers for ``make run``: a stand-in Ghost blog (see :mod:`.blog`)."""
