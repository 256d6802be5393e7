"""Blog sources: configuration, guarded HTTP fetching, readers for Ghost, WordPress and feeds."""
