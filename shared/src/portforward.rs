//! `--port-forward resource=svc/NAME,port=LOCAL[:REMOTE]`: local ports
//! forwarded to a session's workloads through the API server.
//!
//! The pod behind a service or deployment is looked up again for every new
//! connection, so forwarding follows the workload when its pod is replaced
//! (a rollout after a sync), the way users expect from a live session.

use std::collections::BTreeMap;

use crate::pod::Readiness;
use crate::selector::Selector;
use crate::workloads::{Deployment, Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::net::TcpListener;

/// What to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    pub kind: ForwardKind,
    pub name: String,
    pub local: u16,
    /// The service port (svc) or container port (pod, deploy).
    pub remote: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardKind {
    Service,
    Deployment,
    Pod,
}

/// Port-forward failures.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "invalid --port-forward {0:?}: use resource=svc/NAME,port=LOCAL[:REMOTE] \
         (resource kinds: svc, deploy, pod)"
    )]
    BadSpec(String),
    #[error("{0} has no ready pod to forward to yet")]
    NoPod(String),
    #[error("service {service} has no port {port}")]
    NoServicePort { service: String, port: u16 },
    #[error("service {0} has no selector; it cannot be port-forwarded")]
    NoSelector(String),
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Listen {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

impl std::str::FromStr for ForwardSpec {
    type Err = ForwardError;

    fn from_str(s: &str) -> Result<ForwardSpec, ForwardError> {
        let bad = || ForwardError::BadSpec(s.to_string());
        let mut fields = BTreeMap::new();
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            fields.insert(k.trim(), v.trim());
        }
        let (kind, name) = fields
            .get("resource")
            .and_then(|r| r.split_once('/'))
            .ok_or_else(bad)?;
        let kind = match kind {
            "svc" | "service" | "services" => ForwardKind::Service,
            "deploy" | "deployment" | "deployments" => ForwardKind::Deployment,
            "pod" | "pods" | "po" => ForwardKind::Pod,
            _ => return Err(bad()),
        };
        let ports = fields.get("port").ok_or_else(bad)?;
        let (local, remote) = match ports.split_once(':') {
            Some((l, r)) => (l, r),
            None => (*ports, *ports),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
        if name.is_empty() || fields.len() != 2 {
            return Err(bad());
        }
        Ok(ForwardSpec {
            kind,
            name: name.to_string(),
            local: port(local)?,
            remote: port(remote)?,
        })
    }
}

/// The container port a service port leads to, for a given pod.
pub fn target_port(service: &Service, port: u16, pod: &Pod) -> Result<u16, ForwardError> {
    let name = service.name_any();
    let sp = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == i32::from(port)))
        .ok_or(ForwardError::NoServicePort {
            service: name.clone(),
            port,
        })?;
    match &sp.target_port {
        None => Ok(port),
        Some(IntOrString::Int(p)) => u16::try_from(*p).map_err(|_| ForwardError::NoServicePort {
            service: name,
            port,
        }),
        Some(IntOrString::String(named)) => pod
            .spec
            .as_ref()
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(named.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or(ForwardError::NoServicePort {
                service: name,
                port,
            }),
    }
}

/// Picks the pod to forward to: the newest of those that can take traffic
/// ([`Readiness::serving`]: ready, and not being deleted).
pub fn pick_pod(mut pods: Vec<Pod>) -> Option<Pod> {
    pods.retain(|p| Readiness::of(p).serving());
    pods.sort_by_key(|p| {
        std::cmp::Reverse(
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
        )
    });
    pods.into_iter().next()
}

/// Resolves a spec to (pod name, pod port) now.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    spec: &ForwardSpec,
) -> Result<(String, u16), ForwardError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    // The API server filters by the selector, as Kubernetes defines it
    // (one that selects nothing has no pod to offer).
    let by_selector = |selector: Selector| {
        let pods = pods.clone();
        async move {
            let Some(query) = selector.query() else {
                return Ok::<_, kube::Error>(None);
            };
            Ok(pick_pod(
                pods.list(&ListParams::default().labels(&query))
                    .await?
                    .items,
            ))
        }
    };
    match spec.kind {
        ForwardKind::Pod => Ok((spec.name.clone(), spec.remote)),
        ForwardKind::Deployment => {
            let deploy: Deployment = Api::namespaced(client.clone(), namespace)
                .get(&spec.name)
                .await?;
            let selector = Selector::of(deploy.spec.as_ref().map(|s| &s.selector));
            let pod = by_selector(selector)
                .await?
                .ok_or_else(|| ForwardError::NoPod(format!("deployment {}", spec.name)))?;
            Ok((pod.name_any(), spec.remote))
        }
        ForwardKind::Service => {
            let svc: Service = Api::namespaced(client.clone(), namespace)
                .get(&spec.name)
                .await?;
            let selector =
                Selector::of_service(svc.spec.as_ref().and_then(|s| s.selector.as_ref()));
            if selector == Selector::Nothing {
                return Err(ForwardError::NoSelector(spec.name.clone()));
            }
            let pod = by_selector(selector)
                .await?
                .ok_or_else(|| ForwardError::NoPod(format!("service {}", spec.name)))?;
            let port = target_port(&svc, spec.remote, &pod)?;
            Ok((pod.name_any(), port))
        }
    }
}

/// Binds 127.0.0.1:LOCAL for a spec (before the session starts, so a busy
/// port is reported at once).
pub async fn listen(spec: &ForwardSpec) -> Result<TcpListener, ForwardError> {
    TcpListener::bind(("127.0.0.1", spec.local))
        .await
        .map_err(|source| ForwardError::Listen {
            port: spec.local,
            source,
        })
}

/// Connections forwarded at once per `--port-forward`; more wait in the
/// listener's backlog until one ends.
pub const MAX_CONNECTIONS: usize = 64;

/// How long to wait before accepting again after `failures` accept errors in
/// a row (out of file descriptors, say): 50 ms, doubling up to 1 s. Without
/// it the loop would spin at full CPU while the error lasts.
pub fn accept_backoff(failures: u32) -> std::time::Duration {
    if failures == 0 {
        return std::time::Duration::ZERO;
    }
    let ms = 50u64.saturating_mul(1u64 << (failures - 1).min(16));
    std::time::Duration::from_millis(ms.min(1000))
}

/// Accepts connections with `accept` and hands each to `handle` on its own
/// task, at most `limit` at once (the next accept waits for a free slot);
/// after an accept error, waits [`accept_backoff`] and says so once through
/// `warn`. Runs until dropped.
pub async fn accept_loop<S, A, AF, H, HF>(
    mut accept: A,
    limit: usize,
    handle: H,
    warn: impl Fn(String),
) where
    A: FnMut() -> AF,
    AF: std::future::Future<Output = std::io::Result<S>>,
    H: Fn(S) -> HF,
    HF: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut failures = 0u32;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match accept().await {
            Ok(socket) => {
                failures = 0;
                let work = handle(socket);
                tokio::spawn(async move {
                    work.await;
                    drop(slot);
                });
            }
            Err(e) => {
                drop(slot);
                failures = failures.saturating_add(1);
                if failures == 1 {
                    warn(format!("cannot accept a connection: {e}; retrying"));
                }
                tokio::time::sleep(accept_backoff(failures)).await;
            }
        }
    }
}

/// Forwards every connection to `listener` to the pod currently behind the
/// spec, [`MAX_CONNECTIONS`] at once. Runs until dropped; errors per
/// connection are reported through `warn` and do not stop the listener.
pub async fn serve(
    listener: TcpListener,
    client: Client,
    namespace: String,
    spec: ForwardSpec,
    warn: impl Fn(String) + Send + Sync + 'static,
) {
    let warn = std::sync::Arc::new(warn);
    let local = spec.local;
    let accept_warn = {
        let warn = warn.clone();
        move |m: String| warn(format!("port-forward 127.0.0.1:{local}: {m}"))
    };
    let handle = |mut socket: tokio::net::TcpStream| {
        let (client, namespace, spec, warn) = (
            client.clone(),
            namespace.clone(),
            spec.clone(),
            warn.clone(),
        );
        async move {
            let result = async {
                let (pod, port) = resolve(&client, &namespace, &spec).await?;
                // The subresource's client: kube offers it on k8s-openapi's Pod.
                let pods: Api<k8s_openapi::api::core::v1::Pod> =
                    Api::namespaced(client, &namespace);
                let mut forwarder = pods.portforward(&pod, &[port]).await?;
                let Some(mut upstream) = forwarder.take_stream(port) else {
                    return Ok::<_, ForwardError>(());
                };
                let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
                drop(upstream);
                let _ = forwarder.join().await;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                warn(format!(
                    "port-forward 127.0.0.1:{} → {}: {e}",
                    spec.local, spec.name
                ));
            }
        }
    };
    accept_loop(
        || async { listener.accept().await.map(|(socket, _)| socket) },
        MAX_CONNECTIONS,
        handle,
        accept_warn,
    )
    .await;
}

#[cfg(test)]
mod props {
    //! `--port-forward` specs come from the command line: any text.
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = (ForwardKind, &'static str)> {
        prop_oneof![
            Just((ForwardKind::Service, "svc")),
            Just((ForwardKind::Service, "services")),
            Just((ForwardKind::Deployment, "deploy")),
            Just((ForwardKind::Deployment, "deployment")),
            Just((ForwardKind::Pod, "pod")),
            Just((ForwardKind::Pod, "po")),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptests::config(512))]

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in any::<String>()) {
            if let Err(e) = s.parse::<ForwardSpec>() {
                prop_assert!(e.to_string().contains("resource=svc/NAME,port=LOCAL[:REMOTE]"));
            }
        }

        #[test]
        fn spec_like_text_parses_or_is_refused(s in "(resource|port|x)?=?(svc|pod|deploy|job)?/?[a-z=,:/ -]{0,12}(,port=)?[0-9:]{0,12}") {
            let _ = s.parse::<ForwardSpec>();
        }

        #[test]
        fn a_written_spec_reads_back(
            (kind, word) in kind(),
            name in "[a-z0-9][a-z0-9.-]{0,40}",
            local in 1u16..,
            remote in 1u16..,
            port_first in any::<bool>(),
        ) {
            let (resource, port) = (format!("resource={word}/{name}"), format!("port={local}:{remote}"));
            let text = if port_first { format!("{port},{resource}") } else { format!("{resource},{port}") };
            let spec: ForwardSpec = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(spec, ForwardSpec { kind, name, local, remote });
        }

        #[test]
        fn any_labels_make_a_selector(labels in proptest::collection::btree_map(any::<String>(), any::<String>(), 0..4)) {
            let _ = Selector::of_service(Some(&labels)).query();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use kube::Resource;

    #[test]
    fn specs_parse_like_the_flag_says() {
        let s: ForwardSpec = "resource=svc/web,port=8080:80".parse().unwrap();
        assert_eq!(
            s,
            ForwardSpec {
                kind: ForwardKind::Service,
                name: "web".into(),
                local: 8080,
                remote: 80
            }
        );
        let s: ForwardSpec = "port=9000,resource=deploy/api".parse().unwrap();
        assert_eq!(
            (s.kind, s.local, s.remote),
            (ForwardKind::Deployment, 9000, 9000)
        );
        for bad in [
            "svc/web",
            "resource=svc/web",
            "resource=svc/web,port=0",
            "resource=job/x,port=1",
            "resource=svc/,port=1",
            "resource=svc/w,port=1,x=2",
            "resource=svc/w,port=70000",
        ] {
            let e = bad.parse::<ForwardSpec>().unwrap_err().to_string();
            assert!(
                e.contains("resource=svc/NAME,port=LOCAL[:REMOTE]"),
                "{bad}: {e}"
            );
        }
    }

    fn pod(name: &str, ready: bool, created: i64) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                }]),
                ..Default::default()
            }],
            ..Default::default()
        });
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn the_newest_ready_pod_is_chosen() {
        let picked = pick_pod(vec![
            pod("old", true, 100),
            pod("new-not-ready", false, 300),
            pod("new", true, 200),
        ])
        .unwrap();
        assert_eq!(picked.name_any(), "new");
        assert!(pick_pod(vec![pod("x", false, 1)]).is_none());
    }

    #[test]
    fn service_ports_map_to_container_ports() {
        let svc = Service {
            spec: Some(ServiceSpec {
                ports: Some(vec![
                    ServicePort {
                        port: 80,
                        target_port: Some(IntOrString::String("http".into())),
                        ..Default::default()
                    },
                    ServicePort {
                        port: 9090,
                        target_port: Some(IntOrString::Int(9091)),
                        ..Default::default()
                    },
                    ServicePort {
                        port: 7000,
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = pod("p", true, 1);
        assert_eq!(target_port(&svc, 80, &p).unwrap(), 8080);
        assert_eq!(target_port(&svc, 9090, &p).unwrap(), 9091);
        assert_eq!(target_port(&svc, 7000, &p).unwrap(), 7000);
        assert!(
            target_port(&svc, 1, &p)
                .unwrap_err()
                .to_string()
                .contains("no port 1")
        );
    }

    #[test]
    fn accept_errors_back_off_from_50ms_doubling_to_1s() {
        let ms = |n| accept_backoff(n).as_millis();
        assert_eq!(
            (0..=7).map(ms).collect::<Vec<_>>(),
            [0, 50, 100, 200, 400, 800, 1000, 1000]
        );
        assert_eq!(ms(u32::MAX), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_accept_is_retried_with_backoff_not_in_a_spin() {
        // Out of file descriptors for 10 s: the loop asks again a dozen
        // times, not millions, and warns once.
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, w) = (calls.clone(), warnings.clone());
        let looping = accept_loop(
            move || {
                let n = c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    if n >= 1000 {
                        // A spinning loop stops here, so that the test ends.
                        std::future::pending::<()>().await;
                    }
                    Err::<(), _>(std::io::Error::other("Too many open files (os error 24)"))
                }
            },
            4,
            |()| async {},
            move |m| w.lock().unwrap().push(m),
        );
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), looping).await;
        let calls = calls.load(std::sync::atomic::Ordering::Relaxed);
        // 50+100+200+400+800 ms, then one a second.
        assert!((12..=16).contains(&calls), "{calls} accept calls in 10 s");
        let warnings = warnings.lock().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("Too many open files"), "{warnings:?}");
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_for_a_free_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, p) = (busy.clone(), peak.clone());
        let server = tokio::spawn(async move {
            accept_loop(
                || async { listener.accept().await.map(|(s, _)| s) },
                2,
                move |mut socket: tokio::net::TcpStream| {
                    let (b, p) = (b.clone(), p.clone());
                    async move {
                        let now = b.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        p.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                        // Serve until the client closes.
                        let mut buf = [0u8; 16];
                        let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
                        let _ = tokio::io::AsyncWriteExt::write_all(&mut socket, b"bye").await;
                        b.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                },
                |_| {},
            )
            .await;
        });
        let mut clients = Vec::new();
        for _ in 0..5 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(busy.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Each one that ends lets a waiting one in; all are served.
        for mut c in clients {
            tokio::io::AsyncWriteExt::write_all(&mut c, b"x")
                .await
                .unwrap();
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut c, &mut out)
                .await
                .unwrap();
            assert_eq!(out, b"bye");
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
        server.abort();
    }

    #[test]
    fn the_forward_request_goes_through_the_api_server() {
        let req = kube::core::Request::new(Pod::url_path(&(), Some("sbx")))
            .portforward("web-1", &[8080])
            .unwrap();
        assert_eq!(
            req.uri(),
            "/api/v1/namespaces/sbx/pods/web-1/portforward?&ports=8080"
        );
        assert_eq!(req.method(), http::Method::GET);
    }
}
