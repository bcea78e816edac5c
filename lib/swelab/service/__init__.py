"""`swelab service`: an HTTP control plane over the same stages `swelab run` executes.

app.py (routes, access, server-sent events), page.py (the status page), store.py (job state in SQLite or PostgreSQL),
policy.py (what a submission may ask for), events.py (a job's event log), jobs.py (submissions and the stages run
in process), supervisor.py (one worker process per running job), worker.py (the worker's entry point).
The run folder stays the source of truth for results; the store holds only job state.
"""
