package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
)

// respConn is a minimal RESP2 client: enough for XADD, XGROUP and
// XREADGROUP, with pipelining (write many commands, read the replies in
// order). The bench needs no more of Redis.
type respConn struct {
	conn net.Conn
	w    io.Writer
	r    *bufio.Reader
}

func dialRESP(addr string) (*respConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &respConn{conn: c, w: c, r: bufio.NewReaderSize(c, 1<<20)}, nil
}

func (c *respConn) close() { c.conn.Close() }

// appendCommand appends a command as a RESP array of bulk strings.
func appendCommand(b []byte, args ...[]byte) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}

// do sends one command and reads its reply. A Redis error reply is
// returned as the error.
func (c *respConn) do(args ...string) (any, error) {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	if _, err := c.w.Write(appendCommand(nil, bs...)); err != nil {
		return nil, err
	}
	return c.read()
}

// redisError is an error reply.
type redisError string

func (e redisError) Error() string { return "redis: " + string(e) }

// read reads one reply: string or []byte, int64, []any, nil, or a
// redisError as the error.
func (c *respConn) read() (any, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, errors.New("redis: malformed reply line")
	}
	body := string(line[1 : len(line)-2])
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, redisError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, b); err != nil {
			return nil, err
		}
		return b[:n], nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			v, err := c.read()
			if err != nil {
				var re redisError
				if !errors.As(err, &re) {
					return nil, err
				}
			}
			out[i] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("redis: unknown reply type %q", line[0])
}
