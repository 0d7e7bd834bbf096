"""The chaos suite: mfa-gate on real processes, under real faults, checked by what the target received.

``python -m chaos`` starts a private deployment (its own Redis with AOF on a free port,
SQLite or a fresh PostgreSQL database, the Rublon simulator, the web process, two execute
workers, a gate+maintenance worker, beat and two listeners), submits gated
``http.request`` POSTs through the REST API against a local counting target, answers
them (approve, reject, expire, forge, cancel, let the deadline pass), and meanwhile kills
workers, pool children, listeners, the web process and restarts Redis with work queued.
Then it waits until every action is settled and compares the store with what the target
received: nothing released may be lost, nothing may run twice, nothing may run without a
release, nothing refused may run. See :mod:`chaos.suite` for the knobs.
"""
