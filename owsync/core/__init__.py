"""The pure core: records and their transitions, the sync plan, filters and
paths, the v1 and v2 codecs and session machines, frame sealing.  No I/O:
bytes and records in, decisions out."""
