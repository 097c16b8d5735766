"""The artifact lifecycle: the callback base class, its save queue, the ledger and
manifest of a callback folder, the storage it lives on, atomic writes, the background
worker, and which process writes."""
