// Command service-proxy gives the harness's Flux controllers, which run as
// processes on the test host rather than as pods, what a pod has: Service
// names and Service traffic. In a cluster, kustomize-controller reaches a
// vcluster sandbox's API server at https://NAME.NAMESPACE:443 through the
// cluster's DNS and kube-proxy; here it is started with HTTPS_PROXY pointing
// at this proxy, which answers CONNECT NAME.NAMESPACE[.svc[.cluster.local]]:PORT
// by looking the Service up in the API server and tunnelling to a ready
// endpoint of that port (a pod on the harness's real Node). TLS stays end to
// end between the client and the pod (the proxy sees only the tunnel).
// Loopback addresses are never proxied by Go's HTTP clients, so the
// controllers' other traffic (API server, registry, Git) is unaffected.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

type api struct {
	server string
	token  string
	client *http.Client
}

func (a *api) get(path string, into any) error {
	req, err := http.NewRequest(http.MethodGet, a.server+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

type service struct {
	Spec struct {
		Ports []struct {
			Name       string `json:"name"`
			Port       int    `json:"port"`
			TargetPort any    `json:"targetPort"`
		} `json:"ports"`
	} `json:"spec"`
}

type sliceList struct {
	Items []struct {
		Endpoints []struct {
			Addresses  []string `json:"addresses"`
			Conditions struct {
				Ready *bool `json:"ready"`
			} `json:"conditions"`
		} `json:"endpoints"`
		Ports []struct {
			Name string `json:"name"`
			Port int    `json:"port"`
		} `json:"ports"`
	} `json:"items"`
}

// serviceName splits NAME.NAMESPACE[.svc[.cluster.local]].
func serviceName(host string) (name, namespace string, ok bool) {
	host = strings.TrimSuffix(strings.TrimSuffix(host, "."), ".cluster.local")
	host = strings.TrimSuffix(host, ".svc")
	parts := strings.Split(host, ".")
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// resolve finds a ready endpoint (address:port) of the Service port.
func (a *api) resolve(host string, port int) (string, error) {
	name, ns, ok := serviceName(host)
	if !ok {
		return "", fmt.Errorf("%s is not a Service name (NAME.NAMESPACE[.svc[.cluster.local]])", host)
	}
	var svc service
	if err := a.get("/api/v1/namespaces/"+url.PathEscape(ns)+"/services/"+url.PathEscape(name), &svc); err != nil {
		return "", err
	}
	portName, found := "", false
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			portName, found = p.Name, true
			break
		}
	}
	if !found {
		return "", fmt.Errorf("service %s/%s has no port %d", ns, name, port)
	}
	var slices sliceList
	selector := url.QueryEscape("kubernetes.io/service-name=" + name)
	if err := a.get("/apis/discovery.k8s.io/v1/namespaces/"+url.PathEscape(ns)+"/endpointslices?labelSelector="+selector, &slices); err != nil {
		return "", err
	}
	for _, s := range slices.Items {
		target := 0
		for _, p := range s.Ports {
			if p.Name == portName {
				target = p.Port
			}
		}
		if target == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, addr := range e.Addresses {
				return net.JoinHostPort(addr, strconv.Itoa(target)), nil
			}
		}
	}
	return "", fmt.Errorf("service %s/%s has no ready endpoint for port %d", ns, name, port)
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "only CONNECT to NAME.NAMESPACE:PORT is proxied", http.StatusMethodNotAllowed)
		return
	}
	host, portText, err := net.SplitHostPort(r.Host)
	port, perr := strconv.Atoi(portText)
	if err != nil || perr != nil {
		http.Error(w, "CONNECT needs HOST:PORT", http.StatusBadRequest)
		return
	}
	target, err := a.resolve(host, port)
	if err != nil {
		log.Printf("CONNECT %s: %v", r.Host, err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	upstream, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		log.Printf("CONNECT %s -> %s: %v", r.Host, target, err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hijacker, ok := w.(http.Hijacker)
	if !ok {
		upstream.Close()
		http.Error(w, "cannot hijack the connection", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
	conn, buf, err := hijacker.Hijack()
	if err != nil {
		upstream.Close()
		return
	}
	log.Printf("CONNECT %s -> %s", r.Host, target)
	done := make(chan struct{}, 2)
	go func() {
		if n := buf.Reader.Buffered(); n > 0 {
			pending, _ := buf.Reader.Peek(n)
			_, _ = upstream.Write(pending)
		}
		_, _ = io.Copy(upstream, conn)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(conn, upstream)
		done <- struct{}{}
	}()
	<-done
	conn.Close()
	upstream.Close()
	<-done
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	server := flag.String("server", "", "the API server URL")
	caFile := flag.String("ca", "", "the API server's CA certificate (PEM)")
	tokenFile := flag.String("token-file", "", "a file holding a bearer token that may read Services and EndpointSlices")
	flag.Parse()
	if *server == "" || *caFile == "" || *tokenFile == "" {
		log.Fatal("--server, --ca and --token-file are required")
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		log.Fatal(errors.New("no certificate in " + *caFile))
	}
	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		log.Fatal(err)
	}
	a := &api{
		server: strings.TrimSuffix(*server, "/"),
		token:  strings.TrimSpace(string(token)),
		client: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}},
		},
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("service-proxy listening on %s", ln.Addr())
	log.Fatal((&http.Server{Handler: a, ReadHeaderTimeout: 10 * time.Second}).Serve(ln))
}
