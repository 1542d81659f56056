// The Go peer of bench/enrich-http.sh: the channel design of ../../../../shared/peers/seedgo
// (stdin NDJSON → a 10,000-slot hub → a pool of goroutines → one stdout writer) with the
// enrichment a lookup: each of -workers (4) goroutines decodes the event, makes a blocking
// GET of -url ({user_id} replaced by the event's field) with a -timeout (2 s) client, and
// sets the JSON answer under -into ("user"). A failed lookup (no field, an error, a
// status other than 200, an answer that is not JSON) is a dead letter on stderr, one
// JSON line each. Output order is not kept (the design does not keep it).
//
// -cache-size N (0: none) adds what a Go team would add for a hot key set: a map of
// answers behind a mutex, the oldest entry out first once full (no TTL, no sharing of
// calls in flight). The transport keeps -workers idle connections to the service
// (net/http's default of 2 would reconnect for every other call). Standard library only.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

type event struct {
	line []byte
	out  []byte
}

type cache struct {
	mu    sync.Mutex
	max   int
	m     map[string]json.RawMessage
	order []string
}

func (c *cache) get(k string) (json.RawMessage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *cache) put(k string, v json.RawMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; ok {
		return
	}
	if len(c.order) >= c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.m[k] = v
	c.order = append(c.order, k)
}

func main() {
	tmpl := flag.String("url", "http://127.0.0.1:8081/users/{user_id}", "lookup URL; {field} is replaced by the event's field")
	into := flag.String("into", "user", "field the answer goes in")
	workers := flag.Int("workers", 4, "goroutines making lookups")
	timeout := flag.Duration("timeout", 2*time.Second, "timeout of one lookup")
	cacheSize := flag.Int("cache-size", 0, "answers kept (0: none)")
	flag.Parse()
	open, close_ := strings.Index(*tmpl, "{"), strings.Index(*tmpl, "}")
	if open < 0 || close_ < open {
		fmt.Fprintln(os.Stderr, "-url needs a {field}")
		os.Exit(2)
	}
	prefix, field, suffix := (*tmpl)[:open], (*tmpl)[open+1:close_], (*tmpl)[close_+1:]
	client := &http.Client{
		Timeout:   *timeout,
		Transport: &http.Transport{MaxIdleConns: *workers, MaxIdleConnsPerHost: *workers},
	}
	var kept *cache
	if *cacheSize > 0 {
		kept = &cache{max: *cacheSize, m: make(map[string]json.RawMessage, *cacheSize)}
	}
	dead := make(chan string, 1024)
	deadDone := make(chan struct{})
	go func() {
		w := bufio.NewWriter(os.Stderr)
		for d := range dead {
			w.WriteString(d)
			w.WriteByte('\n')
		}
		w.Flush()
		close(deadDone)
	}()
	fail := func(ev event, why string) {
		d, _ := json.Marshal(map[string]string{"stage": "enrich", "reason": why, "raw": string(ev.line)})
		dead <- string(d)
	}

	lookup := func(ev event) (event, bool) {
		dec := json.NewDecoder(bytes.NewReader(ev.line))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			fail(ev, "bad json: "+err.Error())
			return ev, false
		}
		v, ok := m[field]
		if !ok || v == nil {
			fail(ev, "missing field "+field)
			return ev, false
		}
		key := fmt.Sprint(v)
		var answer json.RawMessage
		if kept != nil {
			answer, ok = kept.get(key)
		}
		if answer == nil {
			resp, err := client.Get(prefix + url.PathEscape(key) + suffix)
			if err != nil {
				fail(ev, err.Error())
				return ev, false
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || !json.Valid(body) {
				fail(ev, fmt.Sprintf("status %d, error %v", resp.StatusCode, err))
				return ev, false
			}
			answer = body
			if kept != nil {
				kept.put(key, answer)
			}
		}
		m[*into] = answer
		out, err := json.Marshal(m)
		if err != nil {
			fail(ev, err.Error())
			return ev, false
		}
		ev.out = out
		return ev, true
	}

	hub := make(chan event, 10_000)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			hub <- event{line: append([]byte(nil), sc.Bytes()...)}
		}
		close(hub)
	}()
	out := make(chan event, 1024)
	var wg sync.WaitGroup
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range hub {
				if r, ok := lookup(ev); ok {
					out <- r
				}
			}
		}()
	}
	go func() { wg.Wait(); close(out) }()
	w := bufio.NewWriterSize(os.Stdout, 1<<16)
	for ev := range out {
		w.Write(ev.out)
		w.WriteByte('\n')
	}
	w.Flush()
	close(dead)
	<-deadDone
}
