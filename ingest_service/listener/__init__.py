"""Network listeners: UDP workers and the TCP/TLS listener, each in front of a pipeline.

    sockets   opening the listening sockets (the supervisor does it once)
    udp       UdpWorker: reader thread -> pipeline
    tcp       StreamWorker: acceptor + one thread per connection -> pipeline
    pipeline  bounded inbox -> decode thread -> bounded outbox -> writer thread -> sink
"""
from .pipeline import Pipeline, WorkerSnapshot
from .tcp import StreamWorker, server_tls_context
from .udp import UdpWorker

__all__ = ["Pipeline", "StreamWorker", "UdpWorker", "WorkerSnapshot", "server_tls_context"]
