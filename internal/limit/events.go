// Package limit holds what bounds the resources clients can take: the
// connection counts of each frontend and client against their limits, and
// a summarizer that turns events firing thousands of times a second (a
// limit reached, an accept error) into one log line per second.
package limit

import (
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"
)

// SummaryInterval is how often Events writes its summaries.
const SummaryInterval = time.Second

// Events summarizes events into one log line per kind and interval: the
// first occurrence of a kind is written at the end of the interval it
// fell in, with how many there were, instead of one line per event.
// The zero value is not usable: see NewEvents.
type Events struct {
	log      *slog.Logger
	interval time.Duration

	mu     sync.Mutex
	counts map[string]*event
	armed  bool
}

type event struct {
	msg   string
	attrs []any
	n     int
	err   string // the last error, when the event carries one
}

// NewEvents returns a summarizer writing to log at Warn level every
// interval (SummaryInterval when zero or negative). It starts no
// goroutine until an event is noted.
func NewEvents(log *slog.Logger, interval time.Duration) *Events {
	if interval <= 0 {
		interval = SummaryInterval
	}
	return &Events{log: log, interval: interval, counts: map[string]*event{}}
}

// Note counts one event: msg is the log message ("limit reached",
// "accept failed"), attrs its identifying key/value pairs (limit name,
// frontend, address), err an optional cause whose last value is shown.
// Events with the same msg and attrs are summed. It is cheap and safe for
// concurrent use.
func (e *Events) Note(msg string, err error, attrs ...any) {
	key := eventKey(msg, attrs)
	e.mu.Lock()
	ev := e.counts[key]
	if ev == nil {
		ev = &event{msg: msg, attrs: attrs}
		e.counts[key] = ev
	}
	ev.n++
	if err != nil {
		ev.err = err.Error()
	}
	if !e.armed {
		e.armed = true
		time.AfterFunc(e.interval, e.flush)
	}
	e.mu.Unlock()
}

// flush writes one line per event kind seen in the interval.
func (e *Events) flush() {
	e.mu.Lock()
	evs := make([]*event, 0, len(e.counts))
	for k, ev := range e.counts {
		evs = append(evs, ev)
		delete(e.counts, k)
	}
	e.armed = false
	e.mu.Unlock()
	sort.Slice(evs, func(i, j int) bool { return eventKey(evs[i].msg, evs[i].attrs) < eventKey(evs[j].msg, evs[j].attrs) })
	for _, ev := range evs {
		attrs := append(ev.attrs[:len(ev.attrs):len(ev.attrs)], "count", ev.n, "interval", e.interval)
		if ev.err != "" {
			attrs = append(attrs, "error", ev.err)
		}
		e.log.Warn(ev.msg, attrs...)
	}
}

func eventKey(msg string, attrs []any) string {
	var b strings.Builder
	b.WriteString(msg)
	for _, a := range attrs {
		b.WriteByte(0)
		switch v := a.(type) {
		case string:
			b.WriteString(v)
		default:
			b.WriteString(slog.AnyValue(v).String())
		}
	}
	return b.String()
}
