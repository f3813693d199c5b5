// A tiny HTTP server for the real node's tests, built static and packed as an OCI image.
//
//	GET /       -> "hello from <POD_IP>"
//	GET /state  -> "serving", or "draining" once SIGTERM arrived
//	GET /resolve?name=N -> the addresses N resolves to (through the pod's cluster DNS)
//	GET /fetch?url=U    -> the body of U (pod-to-Service traffic)
//	GET /metrics        -> node_test_requests_total in the Prometheus text format
//
// On SIGTERM it keeps serving for DRAIN_SECONDS (default 3), then exits 0: the kubelet's grace period
// is visible from outside as the "draining" state.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	var draining atomic.Bool
	var requests atomic.Int64
	drain := 3
	if v, err := strconv.Atoi(os.Getenv("DRAIN_SECONDS")); err == nil {
		drain = v
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprintf(w, "hello from %s\n", os.Getenv("POD_IP"))
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE node_test_requests_total counter\nnode_test_requests_total %d\n", requests.Load())
	})
	mux.HandleFunc("/state", func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			fmt.Fprintln(w, "draining")
			return
		}
		fmt.Fprintln(w, "serving")
	})
	mux.HandleFunc("/resolve", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, r.URL.Query().Get("name"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, strings.Join(addrs, " "))
	})
	mux.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		client := http.Client{Timeout: 5 * time.Second}
		resp, err := client.Get(r.URL.Query().Get("url"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	})
	srv := &http.Server{Addr: ":8080", Handler: mux}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		draining.Store(true)
		fmt.Println("SIGTERM: draining for", drain, "seconds")
		time.Sleep(time.Duration(drain) * time.Second)
		os.Exit(0)
	}()
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
