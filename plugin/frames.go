package plugin

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// FrameSize is the largest payload of one frame on the wire. gRPC messages
// stay well under MaxMessageSize on both sides.
const FrameSize = 4 << 20

// MaxMessageSize is the gRPC message limit both sides set (send and
// receive): a frame plus its envelope fits with room to spare.
const MaxMessageSize = 16 << 20

// queueFrames is how many frames of one port the receiving side buffers
// before it stops reading the stream (unless a consumer waits on another
// port, see demux).
const queueFrames = 8

// frameWriter cuts a byte stream into frames of at most FrameSize bytes and
// hands each to send. Close sends the last buffered bytes with eof set.
type frameWriter struct {
	port string
	buf  []byte
	send func(port string, data []byte, eof bool) error
}

func newFrameWriter(port string, send func(string, []byte, bool) error) *frameWriter {
	return &frameWriter{port: port, buf: make([]byte, 0, FrameSize), send: send}
}

func (w *frameWriter) Write(p []byte) (int, error) {
	n := 0
	// Large writes (record bodies) go out as frames cut from p itself,
	// without a copy into buf: send marshals synchronously.
	if len(p) >= FrameSize/4 {
		if err := w.flush(false); err != nil {
			return 0, err
		}
		for len(p) > 0 {
			k := min(FrameSize, len(p))
			if err := w.send(w.port, p[:k], false); err != nil {
				return n, err
			}
			p = p[k:]
			n += k
		}
		return n, nil
	}
	for len(p) > 0 {
		k := min(FrameSize-len(w.buf), len(p))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		n += k
		if len(w.buf) == FrameSize {
			if err := w.flush(false); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (w *frameWriter) flush(eof bool) error {
	if len(w.buf) == 0 && !eof {
		return nil
	}
	err := w.send(w.port, w.buf, eof)
	w.buf = w.buf[:0]
	return err
}

// Close sends what is buffered and the end of the port.
func (w *frameWriter) Close() error { return w.flush(true) }

// demux spreads the frames of several ports, arriving on one stream, over
// one reader per port. A port's queue is bounded (queueFrames) so that a
// slow consumer slows the stream down, except while a consumer waits on
// another port: then frames are queued without bound, so that a stage that
// reads its ports in another order than they are sent cannot deadlock.
type demux struct {
	mu      sync.Mutex
	cond    *sync.Cond
	ports   map[string]*portQueue
	waiting map[string]int
	err     error // set once the stream ends abnormally
	closed  bool
}

type portQueue struct {
	frames [][]byte
	eof    bool
	cur    []byte
}

func newDemux(ports []string) *demux {
	d := &demux{ports: map[string]*portQueue{}, waiting: map[string]int{}}
	d.cond = sync.NewCond(&d.mu)
	for _, p := range ports {
		d.ports[p] = &portQueue{}
	}
	return d
}

func (d *demux) otherWaiting(port string) bool {
	for p, n := range d.waiting {
		if n > 0 && p != port {
			return true
		}
	}
	return false
}

// push queues a frame of port; it blocks while the port's queue is full.
func (d *demux) push(port string, data []byte, eof bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	q, ok := d.ports[port]
	if !ok {
		return fmt.Errorf("frame for unknown port %q", port)
	}
	if q.eof {
		return fmt.Errorf("frame for port %q after its end", port)
	}
	for len(q.frames) >= queueFrames && !d.otherWaiting(port) && d.err == nil && !d.closed {
		d.cond.Wait()
	}
	if d.closed {
		return errors.New("demux closed")
	}
	if len(data) > 0 {
		q.frames = append(q.frames, data)
	}
	q.eof = eof
	d.cond.Broadcast()
	return nil
}

// fail ends every port with err (nil: the stream ended; ports that did not
// see their end fail with io.ErrUnexpectedEOF).
func (d *demux) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	if d.err == nil {
		d.err = err
	}
	d.cond.Broadcast()
}

// close releases anyone blocked; later pushes fail.
func (d *demux) close() {
	d.mu.Lock()
	d.closed = true
	d.cond.Broadcast()
	d.mu.Unlock()
}

// reader returns an io.Reader over port's bytes.
func (d *demux) reader(port string) io.Reader { return &demuxReader{d: d, port: port} }

type demuxReader struct {
	d    *demux
	port string
}

func (r *demuxReader) Read(p []byte) (int, error) {
	d := r.d
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.ports[r.port]
	for len(q.cur) == 0 {
		if len(q.frames) > 0 {
			q.cur = q.frames[0]
			q.frames[0] = nil
			q.frames = q.frames[1:]
			d.cond.Broadcast()
			continue
		}
		if q.eof {
			return 0, io.EOF
		}
		if d.err != nil {
			return 0, d.err
		}
		if d.closed {
			return 0, io.ErrClosedPipe
		}
		d.waiting[r.port]++
		d.cond.Broadcast()
		d.cond.Wait()
		d.waiting[r.port]--
	}
	n := copy(p, q.cur)
	q.cur = q.cur[n:]
	return n, nil
}
