// Command hello-web is the small HTTP server of the harness's images
// (tests/cluster/images builds it into the image hello-web): what the
// examples' and the end-to-end tests' pods run on the real Node.
//
//	GET /         the greeting: the file $GREETING_FILE (default
//	              /etc/hello/greeting, a mounted ConfigMap key) if it
//	              exists, else $GREETING, else "hello"; then the pod's name
//	GET /healthz  200 "ok"
//	GET /status/N answers with status code N (a probe that fails for real)
//
// It writes one line to stdout when it listens and one per request, so a
// container's log has something real in it. Listens on --listen (default
// :8080, or $PORT); exits 0 on SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func greeting() string {
	file := os.Getenv("GREETING_FILE")
	if file == "" {
		file = "/etc/hello/greeting"
	}
	if b, err := os.ReadFile(file); err == nil {
		return strings.TrimSpace(string(b))
	}
	if g := os.Getenv("GREETING"); g != "" {
		return g
	}
	return "hello"
}

func main() {
	addr := ":8080"
	if p := os.Getenv("PORT"); p != "" {
		addr = ":" + p
	}
	listen := flag.String("listen", addr, "address to listen on")
	flag.Parse()
	host, _ := os.Hostname()

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if err != nil || code < 200 || code > 599 {
			http.Error(w, "usage: /status/CODE (200-599)", http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d\n", code)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "%s (from %s)\n", greeting(), host)
	})
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("hello-web: %s %s from %s\n", r.Method, r.URL.Path, r.UserAgent())
		mux.ServeHTTP(w, r)
	})

	srv := &http.Server{Addr: *listen, Handler: logged, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	fmt.Printf("hello-web: listening on %s\n", *listen)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "hello-web: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("hello-web: stopped")
}
