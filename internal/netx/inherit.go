package netx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Listening sockets handed from one mailgate process to the next on a
// binary upgrade, systemd style: the parent passes them as extra files
// (descriptors 3, 4, ...) and names them in EnvListenFDs, one "network
// address" per descriptor, comma separated. The child takes a socket when it
// listens on the same network and address, and closes the ones it does not
// take once it has started (a listener the new config removed).
//
// Not github.com/cloudflare/tableflip: its descriptor set keeps a duplicate
// of every listener ever opened and has no way to drop one, so a listener
// removed by a reload would stay bound, accepting into a backlog nobody
// reads, across every later upgrade. Here the parent passes exactly the
// sockets it listens on at the moment of the upgrade.
const EnvListenFDs = "MAILGATE_LISTEN_FDS"

type sockKey struct{ network, addr string }

var inherited struct {
	once  sync.Once
	mu    sync.Mutex
	files map[sockKey]*os.File
}

func loadInherited() {
	inherited.files = map[sockKey]*os.File{}
	v := os.Getenv(EnvListenFDs)
	if v == "" {
		return
	}
	os.Unsetenv(EnvListenFDs) // not for the processes this one starts
	for i, name := range strings.Split(v, ",") {
		network, addr, ok := strings.Cut(name, " ")
		if !ok {
			continue
		}
		fd := uintptr(3 + i)
		syscall.CloseOnExec(int(fd))
		inherited.files[sockKey{network, addr}] = os.NewFile(fd, "inherited "+name)
	}
}

// take returns the inherited socket for network and addr, or nil.
func take(network, addr string) *os.File {
	inherited.once.Do(loadInherited)
	inherited.mu.Lock()
	defer inherited.mu.Unlock()
	k := sockKey{network, addr}
	f := inherited.files[k]
	delete(inherited.files, k)
	return f
}

// Inherited reports how many sockets the parent passed that are not taken
// yet.
func Inherited() int {
	inherited.once.Do(loadInherited)
	inherited.mu.Lock()
	defer inherited.mu.Unlock()
	return len(inherited.files)
}

// CloseInherited closes the inherited sockets nobody took.
func CloseInherited() {
	inherited.once.Do(loadInherited)
	inherited.mu.Lock()
	defer inherited.mu.Unlock()
	for k, f := range inherited.files {
		f.Close()
		delete(inherited.files, k)
	}
}

// keepAlive enables TCP keep-alive on accepted clients, so a client that
// vanished without a FIN (a laptop closed, a NAT timeout) is found within
// minutes. Only the idle time is set: each option is one system call per
// connection, and the kernel's interval and count are fine.
var keepAlive = net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{
	Enable: true, Idle: time.Minute, Interval: -1, Count: -1,
}}

// Listen listens on a TCP address: the socket the parent process passed
// for it, if any, else a new one. Accepted connections get TCP keep-alive.
func Listen(network, addr string) (net.Listener, error) {
	if f := take(network, addr); f != nil {
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("inherited %s %s: %w", network, addr, err)
		}
		if tl, ok := ln.(*net.TCPListener); ok {
			return keepAliveListener{tl}, nil
		}
		return ln, nil
	}
	return keepAlive.Listen(context.Background(), network, addr)
}

// keepAliveListener sets keep-alive on an inherited listener's
// connections, as keepAlive does on a new one's.
type keepAliveListener struct{ *net.TCPListener }

func (l keepAliveListener) Accept() (net.Conn, error) {
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	c.SetKeepAliveConfig(keepAlive.KeepAliveConfig)
	return c, nil
}

// File is the listener's socket for a child process.
func (l keepAliveListener) File() (*os.File, error) { return l.TCPListener.File() }

// ListenPacket listens on a UDP address, inherited or new.
func ListenPacket(network, addr string) (net.PacketConn, error) {
	if f := take(network, addr); f != nil {
		pc, err := net.FilePacketConn(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("inherited %s %s: %w", network, addr, err)
		}
		return pc, nil
	}
	return net.ListenPacket(network, addr)
}

// Socket is a listening socket to pass to a child process.
type Socket struct {
	Network, Addr string // as the child will ask for it
	File          *os.File
}

// SocketOf duplicates a listener's or a packet conn's descriptor for a
// child (the caller closes the file once the child started).
func SocketOf(network, addr string, s any) (Socket, error) {
	f, ok := s.(interface{ File() (*os.File, error) })
	if !ok {
		return Socket{}, fmt.Errorf("%s %s: %T has no descriptor to pass", network, addr, s)
	}
	file, err := f.File()
	if err != nil {
		return Socket{}, err
	}
	return Socket{Network: network, Addr: addr, File: file}, nil
}

// ChildEnv is EnvListenFDs for socks, passed as ExtraFiles in that order.
func ChildEnv(socks []Socket) (string, error) {
	names := make([]string, len(socks))
	for i, s := range socks {
		if strings.ContainsAny(s.Network+s.Addr, ", ") {
			return "", errors.New("netx: socket name with a comma or a space: " + s.Network + " " + s.Addr)
		}
		names[i] = s.Network + " " + s.Addr
	}
	return EnvListenFDs + "=" + strings.Join(names, ","), nil
}
