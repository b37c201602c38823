"""Opening the listening sockets (done once by the supervisor, inherited by the workers).

The supervisor keeps the sockets across worker restarts: datagrams and connections
queue in the kernel while a worker is replaced, and a restarted UDP worker gets the
same SO_REUSEPORT socket back, so every exporter stays with the worker that holds
its templates.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

log = logging.getLogger("flow_ingest.listener")

# Linux's SO_RXQ_OVFL (asm-generic/socket.h); the socket module does not export it.
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)


def family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def canonical_host(host: str) -> str:
    """Exporter address text; IPv4 peers of a dual-stack socket lose their ::ffff: prefix."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _dual_stack(sock: socket.socket, address: str) -> None:
    if sock.family == socket.AF_INET6 and address in ("::", ""):
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)


@dataclass(frozen=True)
class ReceiveBuffer:
    requested: int
    granted: int  # what SO_RCVBUF reads back, halved: Linux doubles the value it stores


def set_receive_buffer(sock: socket.socket, size: int) -> ReceiveBuffer:
    # SO_RCVBUFFORCE passes net.core.rmem_max when we may (CAP_NET_ADMIN); else the
    # kernel silently caps SO_RCVBUF at rmem_max, which we then report.
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return ReceiveBuffer(size, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2)


def open_udp_sockets(address: str, port: int, count: int, receive_buffer: int) -> list[socket.socket]:
    """``count`` sockets bound to the same address and port.

    With more than one, SO_REUSEPORT makes the kernel spread datagrams over them by a
    hash of the source and destination address and port, so all datagrams of one
    exporter (one source port) reach the same socket, hence the same worker.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(family_of(address), socket.SOCK_DGRAM)
            sockets.append(sock)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            _dual_stack(sock, address)
            buffer = set_receive_buffer(sock, receive_buffer)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)  # drop counts with each datagram
            except OSError:
                log.warning("SO_RXQ_OVFL not supported: kernel drops will not be counted")
            sock.bind((address, port))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if buffer.granted < buffer.requested:
        log.warning("UDP receive buffer: requested %d bytes, kernel granted %d (raise net.core.rmem_max)",
                    buffer.requested, buffer.granted)
    else:
        log.info("UDP receive buffer: %d bytes per socket", buffer.granted)
    return sockets


def open_tcp_socket(address: str, port: int, backlog: int = 128) -> socket.socket:
    sock = socket.socket(family_of(address), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart while old connections linger
        _dual_stack(sock, address)
        sock.bind((address, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
