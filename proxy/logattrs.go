package proxy

import (
	"context"
	"log/slog"
	"slices"
)

// deferredAttrs is a slog.Handler that adds a session's attributes to each
// record when the record is handled, not when the logger is derived.
// slog's own Logger.With formats the attributes ahead of time into a cloned
// handler, which every session would pay for at login even when none of its
// lines passes the level (the common case at warn). Here deriving costs one
// small allocation, and formatting happens only for lines that are written.
type deferredAttrs struct {
	h     slog.Handler
	attrs []slog.Attr
}

// withDeferred returns a logger that adds attrs to each record it writes.
func withDeferred(log *slog.Logger, attrs ...slog.Attr) *slog.Logger {
	return slog.New(&deferredAttrs{h: log.Handler(), attrs: attrs})
}

func (d *deferredAttrs) Enabled(ctx context.Context, l slog.Level) bool {
	return d.h.Enabled(ctx, l)
}

func (d *deferredAttrs) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(d.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(a)
		return true
	})
	return d.h.Handle(ctx, nr)
}

func (d *deferredAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	return &deferredAttrs{h: d.h, attrs: append(slices.Clip(d.attrs), as...)}
}

func (d *deferredAttrs) WithGroup(name string) slog.Handler {
	return d.h.WithAttrs(d.attrs).WithGroup(name)
}
