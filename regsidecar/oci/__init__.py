"""Pure OCI distribution vocabulary: names, references, digests, media types, ranges, routes.

Nothing in this package performs I/O; every function is tested in microseconds.
"""
