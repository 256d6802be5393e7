"""Blog sources: settings, verification, readers, the importer, the delivery log."""
