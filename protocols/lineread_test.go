package protocols_test

import (
	"bufio"
	"io"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/protocols"
)

func TestReadLineKeep(t *testing.T) {
	long := "a1 LOGIN " + strings.Repeat("x", 100) + " {12+}\r\n"
	r := bufio.NewReaderSize(strings.NewReader("short\r\nbare lf\n"+long+"next\r\ncut"), 16)
	for _, want := range []string{"short", "bare lf"} {
		if l, err := protocols.ReadLineKeep(r, 40, 8, 6); err != nil || string(l) != want {
			t.Fatalf("ReadLineKeep() = %q, %v, want %q", l, err, want)
		}
	}
	_, err := protocols.ReadLineKeep(r, 40, 8, 6)
	le, ok := protocols.AsLongLine(err)
	if !ok || string(le.Head) != "a1 LOGIN" || string(le.Tail) != " {12+}" || err.Error() != "line too long" {
		t.Fatalf("over-long line: %v, %+v", err, le)
	}
	if l, err := protocols.ReadLineKeep(r, 40, 8, 6); err != nil || string(l) != "next" {
		t.Fatalf("after the long line: %q, %v", l, err)
	}
	if _, err := protocols.ReadLineKeep(r, 40, 8, 6); err != io.ErrUnexpectedEOF {
		t.Fatalf("line cut by EOF: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := protocols.ReadLineKeep(r, 40, 8, 6); err != io.EOF {
		t.Fatalf("at EOF: %v, want io.EOF", err)
	}
	// Without tailKeep no tail is kept.
	_, err = protocols.ReadLineKeep(bufio.NewReader(strings.NewReader(long)), 40, 8, 0)
	if le, ok := protocols.AsLongLine(err); !ok || le.Tail != nil {
		t.Fatalf("tailKeep 0: %v, %+v", err, le)
	}
}
