"""gunicorn settings for the HTTP ingest app, read from the WebConfig that ``run_gunicorn``
puts in the environment::

    gunicorn --config python:ingest_service.web.gunicorn_conf 'ingest_service.web.app:app_from_environment()'

gthread workers: request threads may wait (``?wait=true``, a full queue) without blocking
the worker's main loop, which keeps answering gunicorn's heartbeat.  The app is loaded in
the master before the fork (``preload_app``), so a bad configuration stops gunicorn at
once; each worker then starts its own writer thread after the fork (``post_fork``) and
drains it when it exits (``worker_exit``).
"""
from __future__ import annotations

import os

from ingest_service.web.app import bind_address, config_from_environment, start_runtimes, stop_runtimes
from ingest_service.web.health import mark_process_dead

_config = config_from_environment()

bind = [bind_address(_config)]
workers = _config.workers
worker_class = "gthread"
threads = _config.threads
preload_app = True
# Each worker its own SO_REUSEPORT socket: the kernel spreads connections over the workers
# (with one shared socket the busiest worker tends to accept most keep-alive connections).
reuse_port = _config.reuse_port
graceful_timeout = max(1, round(_config.graceful_timeout))  # gunicorn takes whole seconds
timeout = 60  # heartbeat of the worker's main loop, not a request time limit
keepalive = 75  # longer than typical client idle pools, so clients rarely race a close
accesslog = None
if _config.access_log:
    accesslog = "/dev/stderr" if _config.output == "-" else "-"  # stdout may carry the NDJSON output
errorlog = "-"
loglevel = _config.log_level
proc_name = "flow-ingest-http"
if _config.tls_cert:
    certfile, keyfile = _config.tls_cert, _config.tls_key
control_socket_disable = True  # gunicorn >= 25's control socket: one fixed path per user, not needed here
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"  # the heartbeat file: tmpfs, never a slow disk


def post_fork(server, worker):
    # our modules log through the root logger: same format (text or JSON) as the rest of serve
    from ingest_service.logging_setup import configure_logging

    configure_logging(_config.log_level)
    start_runtimes()


def worker_exit(server, worker):
    stop_runtimes(max(1.0, _config.graceful_timeout - 1.0))


def child_exit(server, worker):
    mark_process_dead(worker.pid)
