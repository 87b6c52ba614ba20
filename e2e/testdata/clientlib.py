"""What imapc.py, popc.py and smtpc.py share: the connection flags, the TLS context and the
one-event-per-line output the Go test reads (pyClient.expect).

The scripts run as `python3 testdata/x.py`: Python puts their directory first on sys.path, so
`import clientlib` finds this file.
"""
import argparse
import socket
import ssl
import sys


def out(*parts):
    print(*parts, flush=True)


def text(b):
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    return str(b)


def parser():
    """An ArgumentParser with the flags every client takes; the script adds its own."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--tls", default="starttls", choices=["none", "starttls", "implicit"])
    ap.add_argument("--cafile", default="")
    ap.add_argument("--source", default="")
    ap.add_argument("--timeout", type=float, default=15.0)
    return ap


def parse(ap):
    """The parsed flags, with host and port (from --addr), src (source_address for
    socket.create_connection, from --source) and ctx: a TLS context that verifies the server
    against --cafile, or nothing without it."""
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    a.host, a.port = host, int(port)
    a.src = (a.source, 0) if a.source else None
    if a.cafile:
        a.ctx = ssl.create_default_context(cafile=a.cafile)
    else:
        a.ctx = ssl.create_default_context()
        a.ctx.check_hostname = False
        a.ctx.verify_mode = ssl.CERT_NONE
    return a


def tcp(a, timeout=None):
    """A TCP connection to --addr from --source."""
    return socket.create_connection((a.host, a.port), timeout or a.timeout, source_address=a.src)


def socket_classes(a, plain, implicit, connect=None):
    """Subclasses of a stdlib client and of its TLS variant (IMAP4 and IMAP4_SSL, POP3 and
    POP3_SSL) whose socket comes from connect(timeout), by default tcp: the stdlib ones cannot
    bind to --source. The TLS one wraps it with a.ctx."""
    connect = connect or (lambda timeout: tcp(a, timeout))

    class Plain(plain):
        def _create_socket(self, timeout):
            return connect(timeout)

    class Implicit(implicit):
        def _create_socket(self, timeout):
            return a.ctx.wrap_socket(connect(timeout), server_hostname=self.host)

    return Plain, Implicit


def run(main):
    """Exits with main's status; an exception becomes one ERROR line for the Go test."""
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - report anything to the test
        out("ERROR", type(e).__name__, e)
        sys.exit(1)
