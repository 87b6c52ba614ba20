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
import imaplib
import sys

from clientlib import out, parse, parser, run, socket_classes, tcp, text


def main():
    ap = parser()
    ap.add_argument("--proxy-v1", default="")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--auth", default="login", choices=["login", "plain"])
    ap.add_argument("--then", default="none", choices=["none", "list", "hold", "idle"])
    a = parse(ap)
    host, port, ctx = a.host, a.port, a.ctx

    def raw_socket(timeout):
        s = tcp(a, timeout)
        if a.proxy_v1:
            local = s.getsockname()
            s.sendall(("PROXY TCP4 %s %s %d %d\r\n" % (a.proxy_v1, host, local[1], port)).encode())
        return s

    Plain, Implicit = socket_classes(a, imaplib.IMAP4, imaplib.IMAP4_SSL, raw_socket)

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
    run(main)
