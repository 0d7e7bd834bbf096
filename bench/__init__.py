"""The mfa-gate benchmark: ``python -m bench`` (``--help`` lists every option).

It starts a whole deployment of real processes on loopback (its own Redis, the Rublon
simulator, the web process, the gate and execute workers, beat, one listener) plus a
plain-Celery worker on the same Redis with the same worker settings as the execute queue,
and measures, in one run, mfa-gate beside plain Celery:

1. release latency: the simulator sending ``confirmed`` -> the execute task starting,
   over many approvals while a fixed number of actions stay pending;
2. the allow path: REST submit -> the execute task starting, for an action the policy
   allows, against a plain Celery no-op task's send -> start;
3. throughput: gated actions per second end to end with the simulator approving at
   once, against a plain two-task Celery chain;
4. scale: one listener holding 10,000 pending approvals on its one WebSocket: its peak
   RSS, the time to resume them all after a restart, and the release latency when they
   are approved.

Timestamps are ``time.time()`` wall clock, comparable across processes on one machine.
Modules: ``main`` (command line), ``deployment`` (processes), ``baseline`` (the plain
Celery app), ``actions`` (the no-op action mfa-gate runs), ``probes`` (reading the store,
the simulator and /proc), ``measure`` (the four measurements), ``report`` (figures,
targets, table, JSON), ``profiles`` (optional py-spy profiles, ``--profile DIR``).

Run from the repository root: ``.venv/bin/python -m bench`` (about 7 minutes on a 2-core
machine), ``--quick`` (under a minute), ``--help`` for every count and rate.
"""
