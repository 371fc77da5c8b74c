"""The scale-up simulation: N hosts boot at once and pull one image.

Run it as root: ``python -m benchmarks.scaleup`` (``--help`` lists the flags).

``benchmarks/scaleup/README.md`` says what it measures, draws the topology, and shows how
the defaults were checked. In short: host download cap 8 Mbit/s, central registry upload cap
80 Mbit/s (10 hosts' worth), S3 uncapped, MTU 9000, cubic. 8 Mbit/s is the highest host cap
at which the heaviest network-bound phase (sidecar, N = 40: 40 sidecars and 40 pullers
streaming 40 MB/s out of moto on 2 cores) keeps the machine 70-74 % busy on average
(16 Mbit/s: 96 %, CPU-bound; 10: 84 %; 6: 59 % but a 30 min sweep), and its all-ready time
stays within a few % of what the cap allows. Every run reports both: CPU (mean / p90 / max
from /proc/stat, CPU seconds per role) and all-ready against the caps' ideal. Modules:

* ``netns``   -- the namespaces, bridge, veths and tbf caps; the address plan; stale clean-up
* ``procs``   -- processes inside the namespaces, tracked and stopped by PID; bounded jobs
* ``servers`` -- moto (seeded from inside its namespace), distribution, one sidecar per host
* ``capped``  -- ``--s3-conn-mbit``: nginx capping each S3 connection, in the S3 namespace
* ``params``  -- every parameter, the scenarios and the sidecar settings of each
* ``run``     -- one sweep: per N and scenario, start servers, pull from every host, measure
* ``cpu``     -- whole-machine CPU share from /proc/stat during each pull phase
* ``report``, ``ideal`` -- Markdown table, targets, plots; what the caps alone allow
* ``probe``, ``seed`` -- small programs run *inside* a namespace (readiness, bucket seeding)
* ``model``   -- the analytic model (separate)
"""
