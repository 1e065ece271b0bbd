// The Go client's publish benchmark (iris-go's BenchmarkPublishThroughputNThreads) with
// NATS in Iris's place, for a baseline taken the same way: one connection subscribed to
// the subject, N goroutines publishing 1-byte messages on it, each publish written into a
// buffered writer under the connection's lock and flushed when no other publish waits
// (iris-go's sendPacket), deliveries read back on the same connection and each handed to
// a goroutine of its own (iris-go's procPublish); the time is until every publish is
// written. Only the server differs. See ../README.md, "Publishing with several
// publishers", for how it is run.
package gopublish

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A NATS connection with iris-go's write discipline.
type conn struct {
	sock     net.Conn
	lock     sync.Mutex
	out      *bufio.Writer
	in       *bufio.Reader
	wait     int32
	delivers chan []byte
	pong     chan struct{}
}

func dial(b *testing.B) *conn {
	port := os.Getenv("NATS_PORT")
	if port == "" {
		port = "4222"
	}
	sock, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		b.Fatalf("dial: %v", err)
	}
	c := &conn{
		sock:     sock,
		out:      bufio.NewWriter(sock),
		in:       bufio.NewReader(sock),
		delivers: make(chan []byte, b.N),
		pong:     make(chan struct{}, 1),
	}
	if _, err := c.in.ReadString('\n'); err != nil { // INFO
		b.Fatalf("info: %v", err)
	}
	c.send("CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB bench 1\r\nPING\r\n")
	go c.read()
	<-c.pong
	return c
}

// Writes one packet as iris-go's sendPacket does: flush only if no other send waits.
func (c *conn) send(packet string) {
	atomic.AddInt32(&c.wait, 1)
	c.lock.Lock()
	defer c.lock.Unlock()
	c.out.WriteString(packet)
	if atomic.AddInt32(&c.wait, -1) == 0 {
		c.out.Flush()
	}
}

func (c *conn) read() {
	for {
		line, err := c.in.ReadString('\n')
		if err != nil {
			return
		}
		switch {
		case len(line) >= 4 && line[:4] == "MSG ":
			var subject, sid string
			var size int
			if _, err := fmt.Sscanf(line, "MSG %s %s %d", &subject, &sid, &size); err != nil {
				return
			}
			payload := make([]byte, size+2)
			if _, err := ioReadFull(c.in, payload); err != nil {
				return
			}
			go func(event []byte) { c.delivers <- event }(payload[:size])
		case len(line) >= 4 && line[:4] == "PING":
			c.send("PONG\r\n")
		case len(line) >= 4 && line[:4] == "PONG":
			c.pong <- struct{}{}
		}
	}
}

func ioReadFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func benchmarkPublishThroughput(threads int, b *testing.B) {
	c := dial(b)
	defer c.sock.Close()
	// The same work list as iris-go's thread pool: b.N publishes, run by `threads` workers.
	jobs := make(chan int, b.N)
	for i := 0; i < b.N; i++ {
		jobs <- i
	}
	close(jobs)
	b.ResetTimer()
	var done sync.WaitGroup
	for w := 0; w < threads; w++ {
		done.Add(1)
		go func() {
			defer done.Done()
			for i := range jobs {
				c.send("PUB bench 1\r\n" + strconv.Itoa(i%10) + "\r\n")
			}
		}()
	}
	done.Wait()
	b.StopTimer()
	reportDelivered(b, c.delivers)
}

// Reports the share of the publishes delivered back to the publishing connection, once
// deliveries stop coming (a server may drop what a slow consumer cannot take, which makes
// its publishers faster; Iris pushes back on them instead).
func reportDelivered(b *testing.B, delivers chan []byte) {
	last := -1
	for len(delivers) != last {
		last = len(delivers)
		time.Sleep(200 * time.Millisecond)
	}
	b.ReportMetric(float64(last)/float64(b.N), "delivered/op")
}

func BenchmarkPublishThroughput1Threads(b *testing.B) { benchmarkPublishThroughput(1, b) }
func BenchmarkPublishThroughput2Threads(b *testing.B) { benchmarkPublishThroughput(2, b) }
func BenchmarkPublishThroughput4Threads(b *testing.B) { benchmarkPublishThroughput(4, b) }
func BenchmarkPublishThroughput8Threads(b *testing.B) { benchmarkPublishThroughput(8, b) }
