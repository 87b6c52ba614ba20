"""An XMPP client on slixmpp (Debian python3-slixmpp), for the e2e tests of mailgate's XMPP
front end with a real client library other than the Go one.

  xmppc.py --addr HOST:PORT --tls starttls|implicit --jid JID --password PW
           [--to JID --body TEXT] [--expect TEXT]

It logs in (STARTTLS on the first listener kind, direct TLS on the second), binds a resource,
sends its presence and prints "LOGIN OK <full JID>". With --to it sends one chat message and
prints "SENT"; with --expect it waits for a message with that body and prints
"MESSAGE <from> <body>". Then it closes the stream and prints "DONE". A failed login is
"ERROR auth <condition>"; anything else that goes wrong, or --timeout passing, an ERROR line.

Run it with /usr/bin/python3: Debian's slixmpp is not importable by other interpreters.
"""
import asyncio
import logging

import clientlib
from clientlib import out

import slixmpp


class Client(slixmpp.ClientXMPP):
    def __init__(self, a):
        super().__init__(a.jid, a.password)
        self.a = a
        self.result = None
        self.finished = asyncio.Event()
        self.ssl_context = a.ctx
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("stream_error", self.on_stream_error)

    def finish(self, line, status):
        if self.result is None:
            self.result = status
            out(line)
        self.finished.set()

    async def on_start(self, _):
        self.send_presence()
        out("LOGIN OK", self.boundjid.full)
        if self.a.to:
            self.send_message(mto=self.a.to, mbody=self.a.body, mtype="chat")
            out("SENT")
        if not self.a.expect:
            # A ping round trip: the message is on the server before we close.
            await self.plugin["xep_0199"].ping(self.boundjid.host, timeout=self.a.timeout)
            self.finish("DONE", 0)

    def on_message(self, msg):
        if self.a.expect and msg["type"] in ("chat", "normal") and msg["body"] == self.a.expect:
            out("MESSAGE", msg["from"].full, msg["body"])
            self.finish("DONE", 0)

    def on_failed_auth(self, stanza):
        cond = stanza.get_condition() if hasattr(stanza, "get_condition") else "failure"
        self.finish("ERROR auth " + str(cond), 1)

    def on_stream_error(self, err):
        self.finish("ERROR stream-error " + str(err["condition"]), 1)

    def on_disconnected(self, _):
        self.finish("ERROR disconnected before the end", 1)


def main():
    ap = clientlib.parser()
    ap.add_argument("--jid", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--to", default="")
    ap.add_argument("--body", default="hello from slixmpp")
    ap.add_argument("--expect", default="")
    a = clientlib.parse(ap)
    logging.basicConfig(level=logging.CRITICAL)
    c = Client(a)
    c.register_plugin("xep_0199")  # ping
    implicit = a.tls == "implicit"
    c.connect(address=(a.host, a.port), use_ssl=implicit, force_starttls=not implicit and a.tls != "none",
              disable_starttls=implicit or a.tls == "none")

    async def run():
        try:
            await asyncio.wait_for(c.finished.wait(), a.timeout)
        except asyncio.TimeoutError:
            c.finish("ERROR timeout", 1)
        c.del_event_handler("disconnected", c.on_disconnected)
        c.disconnect()
        try:
            await asyncio.wait_for(c.disconnected, 5)
        except asyncio.TimeoutError:
            pass

    c.loop.run_until_complete(run())
    return c.result


if __name__ == "__main__":
    clientlib.run(main)
