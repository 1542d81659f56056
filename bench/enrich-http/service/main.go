// The service bench/enrich-http.sh looks users up in: GET /users/{id} sleeps -delay (1 ms)
// and answers {"id":"<id>","name":"user <id>"}, with keep-alive (net/http's default).
// GET /stats answers {"requests":N}, the lookups served so far, so the script can tell
// how many calls each contender made (a cache that works makes few). Standard library only.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8081", "address")
	delay := flag.Duration("delay", time.Millisecond, "time taken by each lookup")
	flag.Parse()
	var served atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(*delay)
		id, _ := json.Marshal(r.PathValue("id"))
		name, _ := json.Marshal("user " + r.PathValue("id"))
		body := make([]byte, 0, 64)
		body = append(body, `{"id":`...)
		body = append(body, id...)
		body = append(body, `,"name":`...)
		body = append(body, name...)
		body = append(body, '}')
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
		served.Add(1)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"requests":` + strconv.FormatInt(served.Load(), 10) + "}"))
	})
	log.Fatal(http.ListenAndServe(*addr, mux))
}
