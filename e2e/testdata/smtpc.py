#!/usr/bin/env python3
"""A real SMTP client for mailgate's e2e tests: Python's stdlib smtplib, driven by flags.

It prints one event per line on stdout (flushed) so the Go test can wait for each:
  GREETING <code>               after connecting (and TLS, for implicit TLS)
  TLS <version>                 once the link is TLS (STARTTLS or implicit)
  EHLO <keywords>               the extensions offered (again after STARTTLS)
  AUTH OK <code> | AUTH FAIL <code> <text>   the answer to AUTH (--auth plain|login)
  SENT <subject>                the message was accepted (250 after DATA)
  SEND FAIL <code> <text>       a MAIL/RCPT/DATA refusal
  HOLDING                       --then hold: now reads commands from stdin: "noop", "send", "quit"
  NOOP <code> <text>            answer to a "noop" stdin command
  EOF <text>                    the server closed the connection
  QUIT <code>                   after QUIT
  ERROR <exception>             anything unexpected (exit status 1)
Passwords are never printed.

usage: smtpc.py --addr HOST:PORT [--tls none|starttls|implicit] [--cafile PEM] [--source IP]
                [--user U --password P] [--auth none|plain|login] [--from A] [--to A] [--subject S]
                [--then none|send|hold] [--timeout S]
--auth plain sends AUTH PLAIN with an initial response; --auth login sends AUTH LOGIN with the
user name as initial response, then the password after "334 Password:" (smtplib's own forms).
--then send (default) sends one message after AUTH; hold sends nothing until told.
"""
import smtplib
import sys

from clientlib import out, parse, parser, run, text


def main():
    ap = parser()
    ap.add_argument("--user", default="")
    ap.add_argument("--password", default="")
    ap.add_argument("--auth", default="plain", choices=["none", "plain", "login"])
    ap.add_argument("--from", dest="sender", default="alice@example.com")
    ap.add_argument("--to", default="bob@example.com")
    ap.add_argument("--subject", default="mailgate e2e")
    ap.add_argument("--then", default="send", choices=["none", "send", "hold"])
    a = parse(ap)
    host, port, ctx, src = a.host, a.port, a.ctx, a.src

    if a.tls == "implicit":
        s = smtplib.SMTP_SSL(timeout=a.timeout, source_address=src, context=ctx)
    else:
        s = smtplib.SMTP(timeout=a.timeout, source_address=src)
    s._host = host  # the TLS server name; smtplib sets it only when the constructor connects
    code, _ = s.connect(host, port)
    out("GREETING", code)
    if a.tls == "implicit":
        out("TLS", s.sock.version())
    s.ehlo("e2e.client.test")
    out("EHLO", " ".join(sorted(k.upper() for k in s.esmtp_features)))
    if a.tls == "starttls":
        s.starttls(context=ctx)
        out("TLS", s.sock.version())
        s.ehlo("e2e.client.test")
        out("EHLO", " ".join(sorted(k.upper() for k in s.esmtp_features)))

    if a.auth != "none":
        s.user, s.password = a.user, a.password
        mech, obj = ("PLAIN", s.auth_plain) if a.auth == "plain" else ("LOGIN", s.auth_login)
        try:
            code, _ = s.auth(mech, obj)
            out("AUTH OK", code)
        except smtplib.SMTPAuthenticationError as e:
            out("AUTH FAIL", e.smtp_code, text(e.smtp_error))
            quit_(s)
            return 0
        except smtplib.SMTPServerDisconnected as e:
            out("EOF", "during AUTH:", e)
            return 0

    def send():
        msg = "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\nsent through mailgate\r\n" % (a.sender, a.to, a.subject)
        try:
            s.sendmail(a.sender, [a.to], msg)
            out("SENT", a.subject)
        except smtplib.SMTPRecipientsRefused as e:
            code, resp = list(e.recipients.values())[0]
            out("SEND FAIL", code, text(resp))
        except smtplib.SMTPResponseException as e:
            out("SEND FAIL", e.smtp_code, text(e.smtp_error))

    if a.then == "send":
        send()
    elif a.then == "hold":
        out("HOLDING")
        for cmd in sys.stdin:
            cmd = cmd.strip()
            try:
                if cmd == "noop":
                    code, resp = s.noop()
                    out("NOOP", code, text(resp))
                    if code == 421:
                        rest = s.sock.recv(4096) if s.sock else b""
                        out("EOF", text(rest))
                        return 0
                elif cmd == "send":
                    send()
                elif cmd == "quit":
                    break
            except smtplib.SMTPServerDisconnected as e:
                out("EOF", e)
                return 0
    quit_(s)
    return 0


def quit_(s):
    try:
        code, _ = s.quit()
        out("QUIT", code)
    except smtplib.SMTPServerDisconnected as e:
        out("EOF", e)


if __name__ == "__main__":
    run(main)
