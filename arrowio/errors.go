package arrowio

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is wrapped by every error about bad data: a schema of the wrong
// kind, a null label, a duplicate sample_id, an image that does not decode.
// Hosts map it to "bad input" (exit status 2).
var ErrInvalid = errors.New("invalid data")

// DataError describes a problem in the data and where it is. Empty fields
// and a negative Row are left out of the message.
type DataError struct {
	File   string // file or port the data came from
	Column string // column name
	Row    int64  // 0-based row in the file or stream; -1 when not about one row
	Msg    string
}

// Error implements error: "arrowio: file F: column C, row R: msg".
func (e *DataError) Error() string {
	var b strings.Builder
	b.WriteString("arrowio: ")
	if e.File != "" {
		fmt.Fprintf(&b, "%s: ", e.File)
	}
	switch {
	case e.Column != "" && e.Row >= 0:
		fmt.Fprintf(&b, "column %q, row %d: ", e.Column, e.Row)
	case e.Column != "":
		fmt.Fprintf(&b, "column %q: ", e.Column)
	case e.Row >= 0:
		fmt.Fprintf(&b, "row %d: ", e.Row)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns ErrInvalid.
func (e *DataError) Unwrap() error { return ErrInvalid }

func dataErr(file, col string, row int64, format string, args ...any) *DataError {
	return &DataError{File: file, Column: col, Row: row, Msg: fmt.Sprintf(format, args...)}
}
