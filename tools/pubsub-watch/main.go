// Command pubsub-watch pulls a Pub/Sub subscription on the emulator (or the
// in-repo fake, tools/pubsub-fake) and prints every message as one JSON line,
// acknowledging it once printed:
//
//	{"message_id":"..","attributes":{..},"data":<JSON value or string>,"ordering_key":".."}
//
// `data` is the message's data parsed as JSON when it is JSON, else the raw
// text. It is how scripts/demo and bench/service see the `promoted` events
// that promoter publishes.
//
//	PUBSUB_EMULATOR_HOST=127.0.0.1:PORT pubsub-watch \
//	    -subscription projects/P/subscriptions/S [-count N] [-timeout 30s]
//
// Without -count it prints until -timeout (0: forever), SIGINT or SIGTERM and
// exits 0. With -count N it exits 0 after N messages, or 1 if -timeout passes
// first. It connects in plaintext, anonymously, to PUBSUB_EMULATOR_HOST only:
// the Go client does that by itself when the variable is set.
//
// Built in GOPATH mode against Debian's golang-google-cloud-dev, see ./build.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"cloud.google.com/go/pubsub"
)

// line is one printed message.
type line struct {
	MessageID   string            `json:"message_id"`
	Attributes  map[string]string `json:"attributes"`
	Data        interface{}       `json:"data"`
	OrderingKey string            `json:"ordering_key"`
}

func main() {
	subName := flag.String("subscription", "", "projects/P/subscriptions/S to pull (required)")
	count := flag.Int("count", 0, "exit after N messages (0: no limit)")
	timeout := flag.Duration("timeout", 0, "stop after this long (0: no limit); with -count, fewer messages by then is an error")
	flag.Parse()
	log.SetPrefix("pubsub-watch: ")
	log.SetFlags(0)

	parts := strings.Split(*subName, "/")
	if len(parts) != 4 || parts[0] != "projects" || parts[2] != "subscriptions" || parts[1] == "" || parts[3] == "" {
		log.Fatalf("-subscription %q: want projects/P/subscriptions/S", *subName)
	}
	if os.Getenv("PUBSUB_EMULATOR_HOST") == "" {
		log.Fatal("PUBSUB_EMULATOR_HOST is not set (this tool only talks to the emulator)")
	}
	if *count < 0 {
		log.Fatal("-count must be >= 0")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if *timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		cancel()
	}()

	client, err := pubsub.NewClient(ctx, parts[1])
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer client.Close()
	sub := client.SubscriptionInProject(parts[3], parts[1])
	// One message at a time, so that -count N prints exactly N and leaves the
	// rest on the subscription (they are nacked, not lost).
	sub.ReceiveSettings.MaxOutstandingMessages = 1
	sub.ReceiveSettings.NumGoroutines = 1

	var mu sync.Mutex
	seen := 0
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	err = sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		mu.Lock()
		defer mu.Unlock()
		if *count > 0 && seen >= *count {
			m.Nack()
			return
		}
		out := line{MessageID: m.ID, Attributes: m.Attributes, OrderingKey: m.OrderingKey}
		if out.Attributes == nil {
			out.Attributes = map[string]string{}
		}
		var v interface{}
		if json.Unmarshal(m.Data, &v) == nil {
			out.Data = v
		} else {
			out.Data = string(m.Data)
		}
		if err := enc.Encode(out); err != nil {
			log.Fatalf("stdout: %v", err)
		}
		m.Ack()
		seen++
		if *count > 0 && seen >= *count {
			cancel()
		}
	})
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		log.Fatalf("pull %s: %v", *subName, err)
	}
	if *count > 0 && seen < *count {
		fmt.Fprintf(os.Stderr, "pubsub-watch: timed out after %d of %d messages\n", seen, *count)
		os.Exit(1)
	}
}
