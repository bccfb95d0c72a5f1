// Command pubsub-fake runs Google's in-memory Pub/Sub fake (pstest) as a
// standalone gRPC server, so tests of the Rust service can talk to it the way
// they would talk to the real service through PUBSUB_EMULATOR_HOST.
//
// Topics and subscriptions are created here, from flags, because the Rust
// crate's admin clients speak REST and pstest speaks gRPC only.
//
//	pubsub-fake [-port N] [-min-ack-deadline 1s] \
//	    -topic projects/p/topics/t \
//	    -subscription 'projects/p/subscriptions/s=projects/p/topics/t[,ordered][,ack=10]'
//
// When ready it prints exactly one line on stdout,
// PUBSUB_EMULATOR_HOST=127.0.0.1:PORT, and then serves until SIGTERM, SIGINT
// or end of stdin (so a test harness that dies cannot leak the process).
//
// Built in GOPATH mode against Debian's golang-google-cloud-dev (0.56), see
// ./build. That pstest version keeps each subscription's backlog in a Go map:
// it stores ordering keys and the enable_message_ordering flag, but delivers
// in no particular order.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/pstest"
	pb "google.golang.org/genproto/googleapis/pubsub/v1"
)

// listFlag collects a repeated string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// subSpec is a parsed -subscription value.
type subSpec struct {
	name, topic string
	ordered     bool
	ackSeconds  int32
}

// parseSub parses NAME=TOPIC[,ordered][,ack=SECONDS].
func parseSub(v string) (subSpec, error) {
	parts := strings.Split(v, ",")
	nt := strings.SplitN(parts[0], "=", 2)
	if len(nt) != 2 || nt[0] == "" || nt[1] == "" {
		return subSpec{}, fmt.Errorf("-subscription %q: want NAME=TOPIC[,ordered][,ack=SECONDS]", v)
	}
	// pstest refuses a subscription whose ack deadline is below its minimum
	// (10 s unless -min-ack-deadline lowers it), and 0 does not mean "default".
	s := subSpec{name: nt[0], topic: nt[1], ackSeconds: 10}
	for _, opt := range parts[1:] {
		switch {
		case opt == "ordered":
			s.ordered = true
		case strings.HasPrefix(opt, "ack="):
			n, err := strconv.Atoi(strings.TrimPrefix(opt, "ack="))
			if err != nil || n < 1 || n > 600 {
				return subSpec{}, fmt.Errorf("-subscription %q: ack must be 1..600 seconds", v)
			}
			s.ackSeconds = int32(n)
		default:
			return subSpec{}, fmt.Errorf("-subscription %q: unknown option %q", v, opt)
		}
	}
	return s, nil
}

func main() {
	var topics, subs listFlag
	port := flag.Int("port", 0, "listen on 127.0.0.1:PORT (default: a free port)")
	minAck := flag.Duration("min-ack-deadline", 0, "lower pstest's minimum ack deadline (>= 1s), for fast redelivery tests")
	stdinExit := flag.Bool("exit-on-stdin-eof", true, "exit when stdin reaches end of file")
	flag.Var(&topics, "topic", "create topic projects/P/topics/T (repeatable)")
	flag.Var(&subs, "subscription", "create subscription NAME=TOPIC[,ordered][,ack=SECONDS] (repeatable)")
	flag.Parse()
	log.SetPrefix("pubsub-fake: ")
	log.SetFlags(0)

	specs := make([]subSpec, 0, len(subs))
	for _, v := range subs {
		s, err := parseSub(v)
		if err != nil {
			log.Fatal(err)
		}
		specs = append(specs, s)
	}
	if *minAck != 0 {
		if *minAck < time.Second {
			log.Fatal("-min-ack-deadline must be at least 1s")
		}
		pstest.SetMinAckDeadline(*minAck)
	}

	// pstest.NewServer always listens on a random localhost port (this version
	// has no NewServerWithPort, and its internal testutil cannot be imported),
	// so a fixed -port is served by a TCP relay in front of it.
	srv := pstest.NewServer()
	defer srv.Close()
	addr := srv.Addr
	if *port != 0 {
		relay, err := startRelay(*port, srv.Addr)
		if err != nil {
			log.Fatal(err)
		}
		defer relay.Close()
		addr = relay.Addr().String()
	}

	ctx := context.Background()
	for _, t := range topics {
		if _, err := srv.GServer.CreateTopic(ctx, &pb.Topic{Name: t}); err != nil {
			log.Fatalf("create topic %s: %v", t, err)
		}
	}
	for _, s := range specs {
		_, err := srv.GServer.CreateSubscription(ctx, &pb.Subscription{
			Name:                  s.name,
			Topic:                 s.topic,
			AckDeadlineSeconds:    s.ackSeconds,
			EnableMessageOrdering: s.ordered,
		})
		if err != nil {
			log.Fatalf("create subscription %s: %v", s.name, err)
		}
	}

	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "PUBSUB_EMULATOR_HOST=%s\n", addr)
	if err := out.Flush(); err != nil {
		log.Fatal(err)
	}

	done := make(chan string, 2)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { done <- (<-sig).String() }()
	if *stdinExit {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			done <- "end of stdin"
		}()
	}
	log.Printf("stopping: %s", <-done)
}

// startRelay accepts on 127.0.0.1:port and copies bytes both ways to target.
func startRelay(port int, target string) (net.Listener, error) {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return // listener closed
			}
			go relay(c, target)
		}
	}()
	return l, nil
}

func relay(c net.Conn, target string) {
	defer c.Close()
	u, err := net.Dial("tcp", target)
	if err != nil {
		log.Printf("relay: %v", err)
		return
	}
	defer u.Close()
	go func() {
		_, _ = io.Copy(u, c)
		if t, ok := u.(*net.TCPConn); ok {
			_ = t.CloseWrite() // pass the client's half-close on
		}
	}()
	_, _ = io.Copy(c, u)
}
