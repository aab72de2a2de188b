"""The Python side of the mixed setup: the same task names as examples/celery_interop.rs.

    CELERY_BROKER_URL=redis://127.0.0.1:6379/0 CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/1 \
        celery -A tasks worker -Q celery,other --loglevel INFO

(run from examples/python, in a venv with celery[redis]==5.7.0: `cargo xtask python-venv`).
"""

import os
import time

from celery import Celery

app = Celery(
    "tasks",
    broker=os.environ.get("CELERY_BROKER_URL", os.environ.get("QUEUE_BROKER_URL", "redis://127.0.0.1:6379/0")),
    backend=os.environ.get("CELERY_RESULT_BACKEND", os.environ.get("QUEUE_RESULT_BACKEND", "redis://127.0.0.1:6379/1")),
)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@app.task(name="tasks.echo")
def echo(value):
    return value


@app.task(name="tasks.fail")
def fail(message):
    raise ValueError(message)


@app.task(name="tasks.flaky", bind=True, max_retries=None)
def flaky(self, failures):
    if self.request.retries < failures:
        raise self.retry(countdown=0)
    return self.request.retries


@app.task(name="tasks.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="tasks.mul")
def mul(x, y):
    return x * y


@app.task(name="tasks.xsum")
def xsum(numbers):
    return sum(numbers)
