//! Reading from a registry: a Flux artifact's manifest and layer, downloaded
//! within limits (a guard against a broken or hostile registry), and the
//! diff of a directory against it.

use std::path::Path;

use super::client::Access;
use super::http::Failure;
use super::{ArtifactRef, Registry, RegistryError};
use crate::artifact::{self, CONTENT_MEDIA_TYPE, TreeDiff, WalkOptions};

impl Registry {
    /// Compares `dir` with the artifact this client is bound to, by file
    /// content.
    pub async fn diff(&self, dir: &Path, walk: &WalkOptions) -> Result<TreeDiff, RegistryError> {
        let reference = &self.reference;
        let local = {
            let dir = dir.to_path_buf();
            let walk = walk.clone();
            tokio::task::spawn_blocking(move || artifact::content_of_dir(&dir, &walk))
        };
        self.login(Access::Pull).await?;
        let (manifest, _) = self.pull_manifest().await?;
        let layer = flux_layer(reference, &manifest)?;
        let limits = artifact::LAYER_LIMITS;
        let limit = download_limit(reference, &layer, limits.compressed)?;
        let file = self.pull_blob(&layer.digest, limit).await?;
        let remote = tokio::task::spawn_blocking(move || {
            artifact::content_of_layer_within(std::io::BufReader::new(file), &limits)
        })
        .await
        .map_err(|e| RegistryError::Temp(std::io::Error::other(e)))??;
        let local = local
            .await
            .map_err(|e| RegistryError::Temp(std::io::Error::other(e)))??;
        Ok(TreeDiff::between(&local, &remote))
    }

    /// Downloads a blob of at most `limit` bytes into an anonymous temporary
    /// file (verified against its digest). More bytes than that stop the
    /// download at once, and are not retried.
    async fn pull_blob(&self, digest: &str, limit: u64) -> Result<std::fs::File, RegistryError> {
        let file = tempfile::tempfile().map_err(RegistryError::Temp)?;
        let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pulled = self
            .retry("download layer", || async {
                let f = file.try_clone().map_err(Failure::Io)?;
                f.set_len(0).map_err(Failure::Io)?;
                let mut out = CappedWriter {
                    inner: tokio::fs::File::from_std(f),
                    left: limit,
                    over: over.clone(),
                };
                tokio::io::AsyncSeekExt::rewind(&mut out.inner)
                    .await
                    .map_err(Failure::Io)?;
                match self.get_blob(digest, &mut out).await {
                    // Not an I/O error to retry: the registry sends too much.
                    Err(_) if over.load(std::sync::atomic::Ordering::Relaxed) => {
                        return Err(Failure::Protocol("the blob is larger than allowed".into()));
                    }
                    other => other?,
                }
                tokio::io::AsyncWriteExt::flush(&mut out.inner)
                    .await
                    .map_err(Failure::Io)
            })
            .await;
        if over.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(RegistryError::BlobTooLarge {
                reference: self.reference.to_string(),
                what: "the registry sent more".into(),
                limit: artifact::size_in_words(limit),
            });
        }
        pulled?;
        let mut file = file;
        std::io::Seek::rewind(&mut file).map_err(RegistryError::Temp)?;
        Ok(file)
    }
}

/// An `AsyncWrite` that fails once more than `left` bytes are written to it,
/// and says so through `over`.
struct CappedWriter<W> {
    inner: W,
    left: u64,
    over: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CappedWriter<W> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if buf.len() as u64 > this.left {
            this.over.store(true, std::sync::atomic::Ordering::Relaxed);
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "the blob is larger than allowed",
            )));
        }
        let poll = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &poll {
            this.left -= *n as u64;
        }
        poll
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The digest and declared size of a Flux artifact's content layer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LayerDescriptor {
    digest: String,
    size: Option<u64>,
}

/// The content layer of a Flux artifact's manifest.
fn flux_layer(reference: &ArtifactRef, manifest: &[u8]) -> Result<LayerDescriptor, RegistryError> {
    let not_flux = |reason: &str| RegistryError::NotFlux {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    let value: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| not_flux(&format!("its manifest is not JSON ({e})")))?;
    let layers = value["layers"]
        .as_array()
        .ok_or_else(|| not_flux("its manifest has no layers"))?;
    let digest_of = |l: &serde_json::Value| {
        l["digest"].as_str().map(|d| LayerDescriptor {
            digest: d.to_string(),
            size: l["size"].as_u64(),
        })
    };
    layers
        .iter()
        .find(|l| l["mediaType"] == CONTENT_MEDIA_TYPE)
        .and_then(digest_of)
        .or_else(|| (layers.len() == 1).then(|| digest_of(&layers[0])).flatten())
        .ok_or_else(|| not_flux(&format!("no layer of type {CONTENT_MEDIA_TYPE}")))
}

/// How many bytes of `layer` to download at most: its declared size,
/// refused before the download when over `cap`.
fn download_limit(
    reference: &ArtifactRef,
    layer: &LayerDescriptor,
    cap: u64,
) -> Result<u64, RegistryError> {
    match layer.size {
        Some(size) if size > cap => Err(RegistryError::BlobTooLarge {
            reference: reference.to_string(),
            what: format!("its manifest says {size} bytes, more"),
            limit: artifact::size_in_words(cap),
        }),
        Some(size) => Ok(size),
        None => Ok(cap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::{CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
    use crate::registry::RegistryOptions;
    use crate::registry::fake;
    use crate::registry::push::tests::tree;

    #[test]
    fn the_content_layer_of_a_flux_manifest_is_found() {
        let (_, layer, one) = crate::artifact::manifest::tests::sample();
        let r: ArtifactRef = "oci://h/x".parse().unwrap();
        assert_eq!(
            flux_layer(&r, &one).unwrap(),
            LayerDescriptor {
                digest: layer.digest.clone(),
                size: Some(10)
            }
        );
        assert!(
            flux_layer(&r, b"{\"layers\": []}")
                .unwrap_err()
                .to_string()
                .contains("not a Flux artifact")
        );
    }

    /// A registry serving one artifact whose manifest declares `declared`
    /// bytes for a layer of `layer` bytes.
    fn serving(declared: u64, layer: usize) -> fake::Rule {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": format!("sha256:{}", "c".repeat(64)), "size": 2},
            "layers": [{"mediaType": CONTENT_MEDIA_TYPE, "digest": format!("sha256:{}", "d".repeat(64)), "size": declared}],
        })
        .to_string();
        Box::new(move |method, path, _| match (method, path) {
            ("GET", "/v2/") => (200, "{}".into()),
            ("GET", p) if p.contains("/manifests/") => (200, manifest.clone()),
            ("GET", p) if p.contains("/blobs/") => (200, "x".repeat(layer)),
            _ => (404, String::new()),
        })
    }

    #[tokio::test]
    async fn diff_refuses_a_layer_declared_too_large_before_downloading_it() {
        let reg = fake::start(serving(300 * 1024 * 1024, 10)).await;
        let r: ArtifactRef = format!("oci://{}/app:v1", reg.addr).parse().unwrap();
        let err = Registry::new(&r, &RegistryOptions::default())
            .diff(tree().path(), &WalkOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("too large to download")
                && err.contains("314572800 bytes")
                && err.contains("256 MiB"),
            "{err}"
        );
        let log = reg.log.lock().unwrap().clone();
        assert!(!log.iter().any(|l| l.contains("/blobs/")), "{log:?}");
    }

    #[tokio::test]
    async fn diff_stops_a_download_past_the_declared_size_without_retrying() {
        let reg = fake::start(serving(1024, 64 * 1024)).await;
        let r: ArtifactRef = format!("oci://{}/app:v1", reg.addr).parse().unwrap();
        let err = Registry::new(&r, &RegistryOptions::default())
            .diff(tree().path(), &WalkOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("too large to download") && err.contains("sent more than 1 KiB"),
            "{err}"
        );
        let log = reg.log.lock().unwrap().clone();
        assert_eq!(
            log.iter().filter(|l| l.contains("/blobs/")).count(),
            1,
            "{log:?}"
        );
    }
}
