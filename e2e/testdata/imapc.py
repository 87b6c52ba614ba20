#!/usr/bin/env python3
"""A real IMAP client for mailgate's e2e tests: Python's stdlib imaplib, driven by flags.

It prints one event per line on stdout (flushed) so the Go test can wait for each:
  CAPS <capabilities>          after the greeting (and again after TLS)
  TLS <version>                once the link is TLS (STARTTLS or implicit)
  LOGIN OK|NO|BAD <text>       the tagged answer to LOGIN / AUTHENTICATE PLAIN
  LIST <line>                  --then list: one per mailbox, then LOGOUT <typ>
  SELECT <typ> <exists>        --then hold|idle
  HOLDING                      --then hold: now reads commands from stdin: "noop", "logout"
  NOOP <typ>                   answer to a "noop" stdin command
  IDLING                       --then idle: the server sent the "+" continuation
  UNTAGGED <line> / BYE <line> / TAGGED <line>   what arrives while idling
  EOF                          the server closed the connection
  LOGOUT <typ>                 after LOGOUT
  ERROR <exception>            anything unexpected (exit status 1)
Passwords are never printed.

usage: imapc.py --addr HOST:PORT [--tls none|starttls|implicit] [--cafile PEM] [--source IP]
                [--proxy-v1 CLIENT_IP] --user U --password P [--auth login|plain]
                [--then none|list|hold|idle] [--timeout S]
"""
import argparse
import imaplib
import socket
import ssl
import sys


def out(*parts):
    print(*parts, flush=True)


def text(b):
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    return str(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--tls", default="starttls", choices=["none", "starttls", "implicit"])
    ap.add_argument("--cafile", default="")
    ap.add_argument("--source", default="")
    ap.add_argument("--proxy-v1", default="")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--auth", default="login", choices=["login", "plain"])
    ap.add_argument("--then", default="none", choices=["none", "list", "hold", "idle"])
    ap.add_argument("--timeout", type=float, default=15.0)
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    port = int(port)

    if a.cafile:
        ctx = ssl.create_default_context(cafile=a.cafile)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

    def raw_socket(timeout):
        src = (a.source, 0) if a.source else None
        s = socket.create_connection((host, port), timeout or a.timeout, source_address=src)
        if a.proxy_v1:
            local = s.getsockname()
            s.sendall(("PROXY TCP4 %s %s %d %d\r\n" % (a.proxy_v1, host, local[1], port)).encode())
        return s

    class Plain(imaplib.IMAP4):
        def _create_socket(self, timeout):
            return raw_socket(timeout)

    class Implicit(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout):
            return self.ssl_context.wrap_socket(raw_socket(timeout), server_hostname=self.host)

    if a.tls == "implicit":
        m = Implicit(host, port, ssl_context=ctx, timeout=a.timeout)
        out("TLS", m.sock.version())
    else:
        m = Plain(host, port, timeout=a.timeout)
    out("CAPS", " ".join(m.capabilities))
    if a.tls == "starttls":
        typ, _ = m.starttls(ssl_context=ctx)
        out("TLS", m.sock.version())
        out("CAPS", " ".join(m.capabilities))

    try:
        if a.auth == "plain":
            blob = b"\0" + a.user.encode() + b"\0" + a.password.encode()
            m.literal = imaplib._Authenticator(lambda _: blob).process
            typ, dat = m._simple_command("AUTHENTICATE", "PLAIN")
        else:
            typ, dat = m._simple_command("LOGIN", a.user, m._quote(a.password))
    except imaplib.IMAP4.abort as e:
        out("EOF", "during login:", e)
        return 0
    except imaplib.IMAP4.error as e:
        out("LOGIN BAD", e)
        return 0
    out("LOGIN", typ, text(dat[-1]) if dat else "")
    if typ != "OK":
        try:
            m.logout()
        except Exception:
            pass
        return 0
    m.state = "AUTH"

    if a.then == "list":
        typ, dat = m.list()
        for line in dat:
            out("LIST", text(line))
        typ, _ = m.logout()
        out("LOGOUT", typ)
        return 0
    if a.then == "none":
        typ, _ = m.logout()
        out("LOGOUT", typ)
        return 0

    typ, dat = m.select("INBOX")
    out("SELECT", typ, text(dat[0]) if dat else "")

    if a.then == "hold":
        out("HOLDING")
        for cmd in sys.stdin:
            cmd = cmd.strip()
            if cmd == "noop":
                try:
                    typ, _ = m.noop()
                    out("NOOP", typ)
                except imaplib.IMAP4.abort as e:
                    out("EOF", e)
                    return 0
            elif cmd == "logout":
                break
        typ, _ = m.logout()
        out("LOGOUT", typ)
        return 0

    # --then idle (RFC 2177), by hand: imaplib has no IDLE before Python 3.14.
    tag = m._new_tag()
    m.send(tag + b" IDLE\r\n")
    m.sock.settimeout(300)
    while True:
        line = m.readline()
        if not line:
            out("EOF")
            return 0
        s = text(line).rstrip("\r\n")
        if s.startswith("+"):
            out("IDLING")
        elif s.startswith("* BYE"):
            out("BYE", s)
        elif s.startswith(text(tag)):
            out("TAGGED", s)
            return 0
        else:
            out("UNTAGGED", s)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # reported as one line for the Go test
        out("ERROR", type(e).__name__, e)
        sys.exit(1)
