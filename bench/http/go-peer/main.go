// The peer for bench/http.sh: a literal Go net/http implementation of the channel
// design ingest-http replaces. Each POST body is decoded as one JSON object, pushed to a
// 10,000-slot buffered channel (the hub), and one goroutine writes the hub to stdout.
// A full hub answers 503 at once.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8090", "address")
	flag.Parse()
	hub := make(chan []byte, 10000)
	go func() {
		w := bufio.NewWriterSize(os.Stdout, 256*1024)
		for {
			select {
			case e := <-hub:
				w.Write(e)
				w.WriteByte('\n')
			default:
				w.Flush()
				e := <-hub
				w.Write(e)
				w.WriteByte('\n')
			}
		}
	}()
	http.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var event map[string]any
		if err := json.Unmarshal(body, &event); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		out, _ := json.Marshal(event)
		select {
		case hub <- out:
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte(`{"accepted":1}`))
		default:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
