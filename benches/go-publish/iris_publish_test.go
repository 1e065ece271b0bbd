package gopublish

// The same benchmark against an Iris node's relay port, through a client written like
// the NATS one above (the relay protocol's PUBLISH instead of PUB, the same lock, flush
// and delivery discipline): only the server differs. IRIS_PORT picks the port (55555).

import (
	"bufio"
	"encoding/binary"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

type relay struct {
	replied  chan struct{}
	sock     net.Conn
	lock     sync.Mutex
	out      *bufio.Writer
	in       *bufio.Reader
	wait     int32
	delivers chan []byte
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func dialRelay(b *testing.B) *relay {
	port := os.Getenv("IRIS_PORT")
	if port == "" {
		port = "55555"
	}
	sock, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		b.Fatalf("dial: %v", err)
	}
	r := &relay{sock: sock, out: bufio.NewWriter(sock), in: bufio.NewReader(sock), delivers: make(chan []byte, b.N)}
	init := []byte{0x00}
	init = appendString(init, "iris-client-magic")
	init = appendString(init, "v1.0-draft2")
	init = appendString(init, "")
	r.send(init)
	// INIT back: opcode, magic, version.
	if op, err := r.in.ReadByte(); err != nil || op != 0x00 {
		b.Fatalf("init refused: %v %v", op, err)
	}
	r.readString()
	r.readString()
	sub := appendString([]byte{0x06}, "bench")
	r.send(sub)
	go r.read()
	// A request to nobody answers once the subscription is in place (the node handles a
	// client's packets in order).
	req := appendString(binary.AppendUvarint([]byte{0x04}, 1), "nobody")
	req = appendString(req, "x")
	req = binary.AppendUvarint(req, 1)
	r.replied = make(chan struct{}, 1)
	r.send(req)
	<-r.replied
	return r
}

func (r *relay) send(packet []byte) {
	atomic.AddInt32(&r.wait, 1)
	r.lock.Lock()
	defer r.lock.Unlock()
	r.out.Write(packet)
	if atomic.AddInt32(&r.wait, -1) == 0 {
		r.out.Flush()
	}
}

func (r *relay) readString() []byte {
	n, err := binary.ReadUvarint(r.in)
	if err != nil {
		return nil
	}
	buf := make([]byte, n)
	if _, err := ioReadFull(r.in, buf); err != nil {
		return nil
	}
	return buf
}

func (r *relay) read() {
	for {
		op, err := r.in.ReadByte()
		if err != nil {
			return
		}
		switch op {
		case 0x08: // PUBLISH: topic, event
			r.readString()
			event := r.readString()
			go func(event []byte) { r.delivers <- event }(event)
		case 0x05: // REPLY to the sync request: id, timed out
			binary.ReadUvarint(r.in)
			r.in.ReadByte()
			r.replied <- struct{}{}
		default:
			return
		}
	}
}

func benchmarkRelayPublish(threads int, b *testing.B) {
	r := dialRelay(b)
	defer r.sock.Close()
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
				packet := appendString([]byte{0x08}, "bench")
				packet = appendString(packet, string(rune('0'+i%10)))
				r.send(packet)
			}
		}()
	}
	done.Wait()
	b.StopTimer()
	reportDelivered(b, r.delivers)
}

func BenchmarkRelayPublish1Threads(b *testing.B) { benchmarkRelayPublish(1, b) }
func BenchmarkRelayPublish2Threads(b *testing.B) { benchmarkRelayPublish(2, b) }
func BenchmarkRelayPublish4Threads(b *testing.B) { benchmarkRelayPublish(4, b) }
func BenchmarkRelayPublish8Threads(b *testing.B) { benchmarkRelayPublish(8, b) }
