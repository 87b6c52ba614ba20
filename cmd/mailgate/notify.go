package main

import (
	"net"
	"os"
	"strings"
)

// sdNotify tells the service manager about mailgate's state through the
// datagram socket systemd names in NOTIFY_SOCKET (sd_notify(3)): READY=1
// once every listener is bound, RELOADING=1 and READY=1 around a reload,
// STOPPING=1 when the drain starts. Without NOTIFY_SOCKET (not under systemd,
// or Type= is not notify) it does nothing. It never fails the caller: the
// service manager only times out without the message.
func sdNotify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if strings.HasPrefix(path, "@") { // an abstract socket
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}
