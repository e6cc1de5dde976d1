package arrowio

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"
)

// AtomicFile is a file written under a temporary name in the destination's
// folder and renamed into place by Commit; Abort (or a failed Commit) removes
// it, so a reader never sees a half-written file. It hashes what is written
// (sha256).
type AtomicFile struct {
	f    *os.File
	path string
	h    hash.Hash
	n    int64
	done bool
}

// CreateAtomic starts writing path.
func CreateAtomic(path string) (*AtomicFile, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	return &AtomicFile{f: f, path: path, h: sha256.New()}, nil
}

// Write implements io.Writer.
func (a *AtomicFile) Write(p []byte) (int, error) {
	n, err := a.f.Write(p)
	a.h.Write(p[:n])
	a.n += int64(n)
	return n, err
}

// Seek reports the current offset; it supports only Seek(0, io.SeekCurrent)
// (what Arrow's IPC file writer asks), since the file is hashed as it is
// written.
func (a *AtomicFile) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekCurrent {
		return 0, fmt.Errorf("arrowio: AtomicFile supports only Seek(0, io.SeekCurrent)")
	}
	return a.n, nil
}

// Sum returns the hex sha256 of the bytes written so far.
func (a *AtomicFile) Sum() string { return hex.EncodeToString(a.h.Sum(nil)) }

// Size returns the number of bytes written so far.
func (a *AtomicFile) Size() int64 { return a.n }

// Commit syncs, closes and renames the file into place.
func (a *AtomicFile) Commit() error {
	if a.done {
		return fmt.Errorf("arrowio: %s: already committed or aborted", a.path)
	}
	a.done = true
	err := a.f.Sync()
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(a.f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(a.f.Name(), a.path)
	}
	if err != nil {
		os.Remove(a.f.Name())
		return fmt.Errorf("arrowio: writing %s: %w", a.path, err)
	}
	return nil
}

// Abort removes the temporary file. It is safe to call after Commit.
func (a *AtomicFile) Abort() {
	if a.done {
		return
	}
	a.done = true
	a.f.Close()
	os.Remove(a.f.Name())
}

// WriteResult describes a written table file.
type WriteResult struct {
	Rows   int64
	Bytes  int64
	SHA256 string
}

// drain writes every batch of r with write, stopping at the first error.
func drain(r array.RecordReader, write func(arrow.Record) error) (int64, error) {
	var rows int64
	for r.Next() {
		rec := r.Record()
		if err := write(rec); err != nil {
			return rows, err
		}
		rows += rec.NumRows()
	}
	return rows, r.Err()
}

// WriteFileAtomic writes data to path atomically: on error no file is
// left, and a reader never sees a half-written one.
func WriteFileAtomic(path string, data []byte) error {
	af, err := CreateAtomic(path)
	if err != nil {
		return err
	}
	if _, err := af.Write(data); err != nil {
		af.Abort()
		return err
	}
	return af.Commit()
}

// WriteIPCFile writes every batch of r to path as an Arrow IPC file,
// atomically: on error no file is left. It does not release r.
func WriteIPCFile(path string, r array.RecordReader) (WriteResult, error) {
	return writeAtomic(path, func(w io.WriteSeeker) (int64, error) {
		fw, err := ipc.NewFileWriter(w, ipc.WithSchema(r.Schema()))
		if err != nil {
			return 0, err
		}
		rows, err := drain(r, fw.Write)
		if cerr := fw.Close(); err == nil {
			err = cerr
		}
		return rows, err
	})
}

// WriteParquet writes every batch of r to path as Parquet (zstd, the Arrow
// schema stored so that metadata survives), atomically. It does not release
// r.
func WriteParquet(path string, r array.RecordReader) (WriteResult, error) {
	return writeAtomic(path, func(w io.WriteSeeker) (int64, error) {
		props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd))
		schema, convert := listSchema(r.Schema())
		pw, err := pqarrow.NewFileWriter(schema, w, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
		if err != nil {
			return 0, err
		}
		rows, err := drain(r, func(rec arrow.Record) error {
			if !convert {
				return pw.WriteBuffered(rec)
			}
			lr, err := toLists(rec, schema)
			if err != nil {
				return err
			}
			defer lr.Release()
			return pw.WriteBuffered(lr)
		})
		if cerr := pw.Close(); err == nil {
			err = cerr
		}
		return rows, err
	})
}

func writeAtomic(path string, body func(io.WriteSeeker) (int64, error)) (WriteResult, error) {
	af, err := CreateAtomic(path)
	if err != nil {
		return WriteResult{}, err
	}
	rows, err := body(af)
	if err != nil {
		af.Abort()
		return WriteResult{}, fmt.Errorf("arrowio: writing %s: %w", path, err)
	}
	res := WriteResult{Rows: rows, Bytes: af.Size(), SHA256: af.Sum()}
	if err := af.Commit(); err != nil {
		return WriteResult{}, err
	}
	return res, nil
}
