"""The pull path below the service: where blob bytes come from and how they arrive.

::

    service (tag -> digest -> manifest -> blob)
       │ blob(name, digest) -> LocalBlob | StreamingBlob
       ▼
    downloads.py   one Download per digest: temp file, bounded slots, publish after verify
    download.py    the shared state readers follow (watermark; last byte after verify)
    fetch.py       parallel ranged parts into the one file, a hasher that follows the prefix
    parts.py       pure: the part grid, claims, the contiguous watermark, multipart part size
    window.py      pure: connections per source, adapted to throughput and throttling
    sources.py     Source Protocols (StoreSource, RegistrySource) behind one Chooser that
                   owns breakers and fallback order
"""
