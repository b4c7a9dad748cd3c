"""The Celery path: a worker task that runs argv commands, a dispatcher, and a state monitor.

The dispatcher turns `tasks.celery` records into Celery tasks; the monitor reads their states
back from the result backend in bulk and publishes TaskEvents. They meet only on topics and in
the Celery broker/backend, so either can crash and restart without losing or duplicating work.
"""
