#!/usr/bin/env python3
"""A real POP3 client for mailgate's e2e tests: Python's stdlib poplib, driven by flags.

It prints one event per line on stdout (flushed) so the Go test can wait for each:
  GREETING <line>              the server greeting
  CAPS <capabilities>          after the greeting (and again after TLS); "CAPS -ERR ..." without CAPA
  TLS <version>                once the link is TLS (STLS or implicit)
  XCLIENT <reply>              --xclient: the answer to an XCLIENT the client tries before login
  LOGIN +OK|-ERR <text>        the answer to PASS
  STAT <count> <size>          after login
  RETR <octets> FOUND|NOTFOUND --retr-subject S: the newest message whose Subject is S, retrieved
  DELE <reply>                 --dele: that message marked deleted
  HOLDING                      --then hold: now reads commands from stdin: "noop", "quit"
  NOOP <reply>                 answer to a "noop" stdin command
  EOF <text>                   the server closed the connection
  QUIT <reply>                 after QUIT
  ERROR <exception>            anything unexpected (exit status 1)
Passwords are never printed.

usage: popc.py --addr HOST:PORT [--tls none|starttls|implicit] [--cafile PEM] [--source IP]
               --user U --password P [--xclient] [--retr-subject S [--dele]]
               [--then none|hold] [--timeout S]
"""
import poplib
import sys

from clientlib import out, parse, parser, run, socket_classes, text


def main():
    ap = parser()
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--xclient", action="store_true")
    ap.add_argument("--retr-subject", default="")
    ap.add_argument("--dele", action="store_true")
    ap.add_argument("--then", default="none", choices=["none", "hold"])
    a = parse(ap)
    host, port, ctx = a.host, a.port, a.ctx

    Plain, Implicit = socket_classes(a, poplib.POP3, poplib.POP3_SSL)

    def caps(m):
        try:
            c = m.capa()
        except poplib.error_proto as e:
            out("CAPS", text(e.args[0]) if e.args else "-ERR")
            return
        out("CAPS", " ".join(sorted(k + (" " + " ".join(v) if v else "") for k, v in c.items())))

    if a.tls == "implicit":
        m = Implicit(host, port, timeout=a.timeout, context=ctx)
        out("TLS", m.sock.version())
    else:
        m = Plain(host, port, timeout=a.timeout)
    out("GREETING", text(m.getwelcome()))
    caps(m)
    if a.tls == "starttls":
        m.stls(context=ctx)  # raises unless CAPA lists STLS
        out("TLS", m.sock.version())
        caps(m)

    if a.xclient:
        try:
            out("XCLIENT", text(m._shortcmd("XCLIENT ADDR=192.0.2.66 PORT=4242")))
        except poplib.error_proto as e:
            out("XCLIENT", text(e.args[0]))

    try:
        m.user(a.user)
        resp = m.pass_(a.password)
    except poplib.error_proto as e:
        out("LOGIN", text(e.args[0]))
        try:
            m.quit()
        except Exception:
            pass
        return 0
    out("LOGIN", text(resp))

    count, size = m.stat()
    out("STAT", count, size)

    if a.retr_subject:
        want = ("Subject: " + a.retr_subject).encode()
        found = 0
        for n in range(count, 0, -1):
            _, lines, _ = m.top(n, 0)
            if want in lines:
                found = n
                break
        if not found:
            out("RETR", 0, "NOTFOUND")
        else:
            _, lines, octets = m.retr(found)
            out("RETR", octets, "FOUND" if want in lines else "NOTFOUND")
            if a.dele:
                out("DELE", text(m.dele(found)))

    def reply(event, cmd):
        """Prints cmd's reply as event; False once the server is gone (EOF)."""
        try:
            out(event, text(cmd()))
            return True
        except (poplib.error_proto, OSError, EOFError) as e:
            out("EOF", e)
            return False

    if a.then == "hold":
        out("HOLDING")
        for cmd in sys.stdin:
            cmd = cmd.strip()
            if cmd == "noop":
                if not reply("NOOP", m.noop):
                    return 0
            elif cmd == "quit":
                break
    reply("QUIT", m.quit)
    return 0


if __name__ == "__main__":
    run(main)
