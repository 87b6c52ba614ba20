#!/usr/bin/env python3
"""A real CalDAV client for mailgate's e2e tests: python3-caldav (Debian's python3-caldav, on
top of requests), driven by flags.

It starts from --url, the server's root or its /.well-known/caldav (RFC 6764), never from a DAV
path it was told, and prints one event per line on stdout (flushed) so the Go test can wait for
each:
  PRINCIPAL <url>        alice's principal, found by a PROPFIND for DAV:current-user-principal
                         on --url (requests follows the well-known redirect)
  HOME <url>             the principal's CALDAV:calendar-home-set
  CALENDARS <n>          how many calendars the home holds before this run adds one
  CALENDAR <url>         the calendar this run made (MKCALENDAR) under the home set
  SAVED <url>            the event PUT into it
  EVENT <uid> <summary>  each event a calendar-query REPORT of that calendar returns
  BYUID <uid> <summary>  the event read back by its UID
  DELETED <url>          --delete: the calendar removed again
  ERROR <exception>      anything unexpected (exit status 1)
Passwords are never printed.

usage: caldavc.py --url URL --user U --password P [--cafile PEM] --calendar ID --uid UID
                  [--summary S] [--delete] [--timeout S]
"""
import argparse
import sys

import caldav

from clientlib import out, run

EVENT = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//mailgate//e2e caldavc//EN
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20260101T100000Z
DTSTART:20260102T100000Z
DTEND:20260102T110000Z
SUMMARY:{summary}
END:VEVENT
END:VCALENDAR
"""


def summary_of(ev):
    """The SUMMARY of a caldav Event, from its iCalendar text."""
    for line in ev.data.splitlines():
        if line.startswith("SUMMARY:"):
            return line[len("SUMMARY:"):]
    return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--cafile", default="")
    ap.add_argument("--calendar", required=True)
    ap.add_argument("--uid", required=True)
    ap.add_argument("--summary", default="mailgate e2e event")
    ap.add_argument("--delete", action="store_true")
    ap.add_argument("--timeout", type=float, default=15.0)
    a = ap.parse_args()

    client = caldav.DAVClient(a.url, username=a.user, password=a.password,
                              ssl_verify_cert=a.cafile or True, timeout=a.timeout)
    principal = client.principal()
    out("PRINCIPAL", principal.url)
    home = principal.calendar_home_set
    out("HOME", home.url)
    out("CALENDARS", len(principal.calendars()))

    cal = principal.make_calendar(name="mailgate e2e " + a.calendar, cal_id=a.calendar)
    out("CALENDAR", cal.url)
    ev = cal.save_event(EVENT.format(uid=a.uid, summary=a.summary))
    out("SAVED", ev.url)
    for e in cal.events():
        e.load()
        out("EVENT", e.icalendar_component["uid"], summary_of(e))
    got = cal.event_by_uid(a.uid)
    out("BYUID", got.icalendar_component["uid"], summary_of(got))
    if a.delete:
        cal.delete()
        out("DELETED", cal.url)
    client.close()
    return 0


if __name__ == "__main__":
    run(main)
