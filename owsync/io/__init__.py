"""The I/O shells around the core: the scanner, safe writes into the sync
directory, the database and its lock, the version store, the framed channel
and the TCP connections."""
