package api

import (
	"compress/gzip"
	"errors"
	"io"
	"sync/atomic"

	"connectrpc.com/connect"
)

// maxMessageBytes is the contract's bound on one request message after
// decompression, and on every response message.
const maxMessageBytes = 1 << 20

// inflatedBytes counts the bytes produced by decompressing request
// messages since the process started. It proves the bound in tests (a gzip
// bomb must leave it about 1 MiB higher, not 384 MiB).
var inflatedBytes atomic.Int64

var errInflateLimit = errors.New("decompressed message is larger than 1 MiB")

// connectLimits are the options every Connect handler gets: the message
// bounds, and a gzip that stops inflating at the bound. Connect's own gzip
// also refuses an oversized message but then inflates the rest of it to
// report its size, which for a gzip bomb is hundreds of MiB of work.
func connectLimits() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithReadMaxBytes(maxMessageBytes),
		connect.WithSendMaxBytes(maxMessageBytes),
		connect.WithCompression("gzip",
			func() connect.Decompressor { return &boundedGzip{limit: maxMessageBytes} },
			func() connect.Compressor { return gzip.NewWriter(nil) },
		),
	}
}

// boundedGzip is a gzip reader that fails once it has produced one byte
// more than limit: enough for Connect to see the message is too large
// (resource_exhausted) and no more.
type boundedGzip struct {
	gz    *gzip.Reader
	limit int64
	n     int64
	err   error // of the last Reset
}

func (b *boundedGzip) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.n > b.limit {
		return 0, errInflateLimit
	}
	if room := b.limit + 1 - b.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := b.gz.Read(p)
	b.n += int64(n)
	inflatedBytes.Add(int64(n))
	return n, err
}

func (b *boundedGzip) Reset(r io.Reader) error {
	b.n = 0
	if b.gz == nil {
		b.gz, b.err = gzip.NewReader(r)
	} else {
		b.err = b.gz.Reset(r)
	}
	return b.err
}

func (b *boundedGzip) Close() error {
	if b.gz == nil {
		return nil
	}
	return b.gz.Close()
}
