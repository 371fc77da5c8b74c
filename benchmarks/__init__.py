"""Benchmarks for regsidecar, each number measured against a peer in the same run.

* ``micro``    -- ``python -m benchmarks.micro``: cache-hit blob GET vs nginx sendfile and
                  distribution, manifest GET by tag vs distribution and bare aiohttp, peak RSS
                  while streaming cold blobs from S3 (moto)
* ``loadgen``  -- run ``hey`` against a loopback URL (bounded) and parse its summary
* ``procstat`` -- CPU time and RSS of a server process from /proc
* ``peers``    -- the comparison servers: nginx (sendfile) and a bare aiohttp handler

See ``benchmarks/README.md`` for what each benchmark measures and the latest results.
"""
