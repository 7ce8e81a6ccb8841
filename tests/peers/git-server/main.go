// Command git-server serves the bare Git repositories under a directory over
// Git's smart HTTP protocol on loopback, for the local control plane's Flux
// source-controller. It is a thin front for Git's own git-http-backend, run
// as a CGI program (net/http/cgi): every Git protocol detail, protocol v2
// included (the client's Git-Protocol header reaches the backend as
// HTTP_GIT_PROTOCOL), is Git's.
//
// No authentication: it listens on a loopback address only. Every repository
// under --root is exported (GIT_HTTP_EXPORT_ALL); a repository accepts pushes
// when its config says http.receivepack=true.
//
//	git-server --listen 127.0.0.1:26017 --root DIR
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to listen on (host:port)")
	root := flag.String("root", "", "directory holding the bare repositories (NAME.git)")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.LUTC)
	if err := run(*listen, *root); err != nil {
		log.Printf("git-server: %v", err)
		os.Exit(1)
	}
}

func run(listen, root string) error {
	if root == "" {
		return errors.New("--root is required: the directory of the bare repositories")
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	if info, err := os.Stat(root); err != nil || !info.IsDir() {
		return fmt.Errorf("%s is not a directory: create it, or pass another --root", root)
	}
	backend, err := httpBackend()
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %v", listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--listen %q: only a loopback IP address is allowed (pushes are not authenticated)", listen)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/", &cgi.Handler{
		Path: backend,
		Root: "/",
		Env: []string{
			"GIT_PROJECT_ROOT=" + root,
			"GIT_HTTP_EXPORT_ALL=1",
		},
		Stderr: backendLog{},
	})
	srv := &http.Server{Handler: logged(sized(mux)), ReadHeaderTimeout: 10 * time.Second}
	log.Printf("serving the repositories of %s on http://%s/ (git http-backend: %s)", root, ln.Addr(), backend)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// httpBackend finds git-http-backend in Git's exec path; a machine without
// Git fails here, loudly.
func httpBackend() (string, error) {
	git, err := exec.LookPath("git")
	if err != nil {
		return "", errors.New("git is not installed (or not on PATH): the Git server runs Git's own git-http-backend; install Git (apt-get install git)")
	}
	out, err := exec.Command(git, "--exec-path").Output()
	if err != nil {
		return "", fmt.Errorf("%s --exec-path: %v", git, err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		return "", fmt.Errorf("git-http-backend is not in Git's exec path (%s); this Git install lacks it", backend)
	}
	return backend, nil
}

// maxBody bounds a request body read into memory (a push of the tests' repositories is small).
const maxBody = 256 << 20

// sized gives a chunked request body a length: Go's CGI handler refuses
// chunked bodies, and Git sends one for a push of more than http.postBuffer
// (1 MiB by default).
func sized(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
			if err != nil {
				http.Error(w, fmt.Sprintf("reading the request body: %v", err), http.StatusRequestEntityTooLarge)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.TransferEncoding = nil
		}
		h.ServeHTTP(w, r)
	})
}

// backendLog puts what git-http-backend writes to stderr (e.g. "Not a git
// repository: ...", without a newline) on log lines of its own.
type backendLog struct{}

func (backendLog) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		log.Printf("git http-backend: %s", line)
	}
	return len(p), nil
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// logged writes one line per request: method, path and query, status, time.
func logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		log.Printf("%s %s %d %s protocol=%q", r.Method, r.URL.RequestURI(), sw.status,
			time.Since(start).Round(time.Millisecond), r.Header.Get("Git-Protocol"))
	})
}
