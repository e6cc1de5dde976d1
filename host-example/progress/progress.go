// Package progress draws one progress line per pipeline node on a terminal
// (rows done/total, rate), or prints a line now and then when the output is
// not a terminal.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/plugin"
)

// Board is a dag.Observer that shows per-node progress on w.
type Board struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	nodes map[string]*state
	order []string
	drawn int // lines drawn last time (tty)
	last  time.Time
	stop  chan struct{}
	done  chan struct{}
}

type state struct {
	id, stage   string
	start       time.Time
	ev          plugin.Event
	finished    bool
	cached      bool
	err         error
	secs        float64
	lastPrinted time.Time
}

var _ dag.Observer = (*Board)(nil)

// New returns a board writing to w; it redraws in place when w is a
// terminal. Call Close when the run ends.
func New(w io.Writer) *Board {
	b := &Board{w: w, tty: isTerminal(w), nodes: map[string]*state{}, stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

func (b *Board) node(id string) *state {
	s, ok := b.nodes[id]
	if !ok {
		s = &state{id: id, start: time.Now()}
		b.nodes[id] = s
		b.order = append(b.order, id)
	}
	return s
}

// NodeStarted implements dag.Observer.
func (b *Board) NodeStarted(id, stage string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.node(id)
	s.stage, s.start = stage, time.Now()
	if !b.tty {
		fmt.Fprintf(b.w, "[%s] started%s\n", id, stageSuffix(stage))
	}
}

func stageSuffix(stage string) string {
	if stage == "" {
		return ""
	}
	return " (stage " + stage + ")"
}

// NodeProgress implements dag.Observer.
func (b *Board) NodeProgress(id string, e plugin.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.node(id)
	s.ev = e
	if !b.tty && time.Since(s.lastPrinted) > 2*time.Second {
		s.lastPrinted = time.Now()
		fmt.Fprintf(b.w, "%s\n", s.line())
	}
}

// NodeFinished implements dag.Observer.
func (b *Board) NodeFinished(id string, res *dag.NodeResult, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.node(id)
	s.finished, s.err = true, err
	if res != nil {
		s.cached, s.secs = res.Cached, res.Seconds
		if s.stage == "" {
			s.stage = res.Stage
		}
	}
	if !b.tty {
		fmt.Fprintf(b.w, "%s\n", s.line())
	}
}

func (s *state) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] ", s.id)
	switch {
	case s.err != nil:
		b.WriteString("failed")
		return b.String()
	case s.cached:
		b.WriteString("reused from the run folder")
		return b.String()
	}
	unit := s.ev.Unit
	if unit == "" {
		unit = "rows"
	}
	el := time.Since(s.start).Seconds()
	if s.finished {
		el = s.secs
	}
	if s.ev.Total > 0 {
		frac := float64(s.ev.Done) / float64(s.ev.Total)
		const width = 24
		full := int(frac * width)
		fmt.Fprintf(&b, "[%s%s] %d/%d %s", strings.Repeat("#", full), strings.Repeat(".", width-min(full, width)), s.ev.Done, s.ev.Total, unit)
	} else if s.ev.Done > 0 {
		fmt.Fprintf(&b, "%d %s", s.ev.Done, unit)
	}
	if el > 0 && s.ev.Done > 0 {
		fmt.Fprintf(&b, " %.0f %s/s", float64(s.ev.Done)/el, unit)
	}
	if s.ev.Message != "" {
		fmt.Fprintf(&b, " %s", s.ev.Message)
	}
	if s.finished {
		fmt.Fprintf(&b, " done in %.1fs", el)
	}
	return b.String()
}

func (b *Board) loop() {
	defer close(b.done)
	t := time.NewTicker(150 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			b.draw()
			return
		case <-t.C:
			b.draw()
		}
	}
}

func (b *Board) draw() {
	if !b.tty {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := append([]string(nil), b.order...)
	var out strings.Builder
	if b.drawn > 0 {
		fmt.Fprintf(&out, "\x1b[%dA", b.drawn)
	}
	for _, id := range ids {
		fmt.Fprintf(&out, "\r\x1b[2K%s\n", b.nodes[id].line())
	}
	b.drawn = len(ids)
	io.WriteString(b.w, out.String())
}

// Close draws the final state and stops the board.
func (b *Board) Close() {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
}
