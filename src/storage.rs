//! Backup storage named by URL: an S3-compatible object store
//! (`s3://BUCKET/PREFIX?endpoint=http://HOST:PORT&region=REGION`; AWS,
//! MinIO, Ceph, `s3s-fs` …) or a directory (`file:///PATH`), through
//! Apache Arrow's `object_store`. What the cluster manager (manifests, the
//! binlog archive, the catalog) and the node agent (a backup's objects,
//! restores) share; below both.
//!
//! - The URL carries no secret: S3 credentials come from the environment
//!   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, read in `config.rs`)
//!   into [`Credentials`], which prints as `******`.
//! - Uploads stream: [`Upload`] takes bytes as they come, hashes them
//!   (SHA-256) and sends them as a multipart upload in parts of
//!   [`PART_BYTES`] (S3's 10,000 parts then allow 160 GB per object, and a
//!   backup rolls to a new object long before: no cap below the store's
//!   own), never holding more than a few parts in memory and never a copy
//!   on local disk. A failed upload is aborted: its parts go, and no object
//!   appears.
//! - Requests are retried with backoff by the client (`RetryConfig`), and
//!   `https` endpoints are verified against the system's roots.

use crate::secret::Secret;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use std::sync::Arc;
use std::time::Duration;

/// One multipart part (S3 takes 5 MiB at least).
pub const PART_BYTES: usize = 16 << 20;

/// S3 credentials (from the environment; never printed).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: Secret,
}

/// A storage URL, parsed and checked: what a request or the config names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: String,
    },
    Dir {
        path: std::path::PathBuf,
    },
}

impl Location {
    /// Reads `s3://BUCKET/PREFIX?endpoint=…&region=…` or `file:///PATH`.
    pub fn parse(url: &str) -> Result<Location, String> {
        let shape = "s3://BUCKET/PREFIX?endpoint=http://HOST:PORT&region=REGION or file:///PATH";
        if let Some(rest) = url.strip_prefix("s3://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
            if bucket.is_empty() {
                return Err(format!("backup storage {url:?} names no bucket: {shape}"));
            }
            let mut endpoint = None;
            let mut region = "us-east-1".to_string();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("endpoint", v))
                        if v.starts_with("http://") || v.starts_with("https://") =>
                    {
                        endpoint = Some(v.trim_end_matches('/').to_string())
                    }
                    Some(("endpoint", v)) => {
                        return Err(format!(
                            "backup storage endpoint {v:?}: an http:// or https:// address"
                        ))
                    }
                    Some(("region", v)) if !v.is_empty() => region = v.to_string(),
                    _ => {
                        return Err(format!(
                            "backup storage {url:?}: unknown parameter {pair:?} (endpoint, region)"
                        ))
                    }
                }
            }
            Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                endpoint,
                region,
            })
        } else if let Some(path) = url.strip_prefix("file://") {
            let path = std::path::PathBuf::from(path);
            if !path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
                return Err(format!(
                    "backup storage {url:?}: an absolute path without .. ({shape})"
                ));
            }
            Ok(Location::Dir { path })
        } else {
            Err(format!("backup storage {url:?}: {shape}"))
        }
    }

    /// As `get_backup_storage` shows it: host, port and type.
    pub fn describe(&self) -> (String, String, &'static str) {
        match self {
            Location::S3 { endpoint, .. } => {
                let e = endpoint
                    .clone()
                    .unwrap_or_else(|| "s3.amazonaws.com".into());
                let hostport = e.split("://").nth(1).unwrap_or(&e).to_string();
                let (host, port) = match hostport.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), p.to_string()),
                    None if e.starts_with("https") => (hostport, "443".into()),
                    None => (hostport, "80".into()),
                };
                (host, port, "S3")
            }
            Location::Dir { path } => (path.display().to_string(), String::new(), "FILE"),
        }
    }
}

/// An object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub bytes: u64,
}

/// The storage: a client for its URL, under its prefix.
#[derive(Clone)]
pub struct Storage {
    pub url: String,
    pub location: Location,
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.url)
    }
}

fn err(e: object_store::Error) -> String {
    crate::redact::text(&e.to_string()).into_owned()
}

impl Storage {
    /// Opens the storage `url` names (a directory is made when missing).
    pub fn open(url: &str, creds: Option<&Credentials>) -> Result<Storage, String> {
        let location = Location::parse(url)?;
        // The S3 client's TLS runs on the ring provider, as the rest of
        // the service (installed once per process; a second call is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match &location {
            Location::S3 {
                bucket,
                prefix,
                endpoint,
                region,
            } => {
                let creds = creds.filter(|c| !c.access_key.is_empty()).ok_or_else(|| {
                    format!(
                        "backup storage {url}: no S3 credentials; set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY in the environment of the service and of every agent"
                    )
                })?;
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_access_key_id(&creds.access_key)
                    .with_secret_access_key(creds.secret_key.expose())
                    .with_retry(object_store::RetryConfig {
                        backoff: object_store::BackoffConfig {
                            init_backoff: Duration::from_millis(200),
                            max_backoff: Duration::from_secs(10),
                            base: 2.0,
                        },
                        max_retries: 6,
                        retry_timeout: Duration::from_secs(120),
                    });
                if let Some(e) = endpoint {
                    b = b
                        .with_endpoint(e)
                        .with_allow_http(e.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                let s3 = b
                    .build()
                    .map_err(|e| format!("backup storage {url}: {}", err(e)))?;
                (Arc::new(s3), prefix.clone())
            }
            Location::Dir { path } => {
                std::fs::create_dir_all(path)
                    .map_err(|e| format!("backup storage {}: {e}", path.display()))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| format!("backup storage {url}: {}", err(e)))?;
                (Arc::new(fs), String::new())
            }
        };
        Ok(Storage {
            url: url.to_string(),
            location,
            store,
            prefix,
        })
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn key_of(&self, p: &ObjectPath) -> String {
        let s = p.as_ref();
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(&format!("{}/", self.prefix))
                .unwrap_or(s)
                .to_string()
        }
    }

    /// Writes a small object whole.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.store
            .put(&self.path(key), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| format!("storing {key}: {}", err(e)))
    }

    /// Reads a small object whole.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, String> {
        let got = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| format!("reading {key}: {}", err(e)))?;
        Ok(got
            .bytes()
            .await
            .map_err(|e| format!("reading {key}: {}", err(e)))?
            .to_vec())
    }

    /// An object's bytes as they arrive.
    pub async fn stream(
        &self,
        key: &str,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<Bytes, String>>, String> {
        let got = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| format!("reading {key}: {}", err(e)))?;
        let key = key.to_string();
        Ok(got
            .into_stream()
            .map(move |r| r.map_err(|e| format!("reading {key}: {}", err(e))))
            .boxed())
    }

    /// The size of an object, or `None` when there is none.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, String> {
        match self.store.head(&self.path(key)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(format!("reading {key}: {}", err(e))),
        }
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, String> {
        let under = self.path(prefix.trim_end_matches('/'));
        let mut out = Vec::new();
        let mut s = self.store.list(Some(&under));
        while let Some(m) = s.next().await {
            match m {
                Ok(m) => out.push(Listed {
                    key: self.key_of(&m.location),
                    bytes: m.size,
                }),
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(format!("listing {prefix}: {}", err(e))),
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Removes an object (none is no error).
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(format!("removing {key}: {}", err(e))),
        }
    }

    /// Starts a streamed upload of `key`.
    pub async fn upload(&self, key: &str) -> Result<Upload, String> {
        let up = self
            .store
            .put_multipart(&self.path(key))
            .await
            .map_err(|e| format!("starting the upload of {key}: {}", err(e)))?;
        Ok(Upload {
            key: key.to_string(),
            writer: Some(WriteMultipart::new_with_chunk_size(up, PART_BYTES)),
            hash: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        })
    }
}

/// What was stored: an object's key, size and SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A streamed upload: bytes in, hashed, sent in parts; [`Upload::finish`]
/// makes the object, dropping it unfinished aborts the upload.
pub struct Upload {
    key: String,
    writer: Option<WriteMultipart>,
    hash: ring::digest::Context,
    bytes: u64,
}

impl Upload {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds bytes (waits while more than 4 parts are in flight).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        let w = self.writer.as_mut().ok_or("the upload ended")?;
        w.wait_for_capacity(4)
            .await
            .map_err(|e| format!("uploading {}: {}", self.key, err(e)))?;
        self.hash.update(data);
        self.bytes += data.len() as u64;
        w.write(data);
        Ok(())
    }

    /// Completes the object; its key, size and hash.
    pub async fn finish(mut self) -> Result<Stored, String> {
        let w = self.writer.take().ok_or("the upload ended")?;
        if let Err(e) = w.finish().await {
            return Err(format!("completing {}: {}", self.key, err(e)));
        }
        Ok(Stored {
            key: self.key.clone(),
            bytes: self.bytes,
            sha256: hex(self.hash.clone().finish().as_ref()),
        })
    }

    /// Gives the upload up: its parts are removed.
    pub async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.abort().await;
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            // Aborted in the background when a runtime is there.
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = w.abort().await;
                });
            }
        }
    }
}

/// Backup encryption: AES-256-GCM (ring) over 1 MiB frames, so that an
/// object of any size is sealed and opened as it streams. Layout:
/// `CCRENC01`, a random 4-byte nonce prefix, then frames of a flag byte
/// (1 on the last frame), the ciphertext's length (u32 LE) and the
/// ciphertext with its tag; the nonce is the prefix and the frame's number,
/// the flag is authenticated, so a frame altered, reordered, dropped or a
/// cut-off object fails to open. The key is derived from the cluster's
/// `backup_encrypt_key` (SHA-256 under a fixed label) and never stored
/// beside the data.
#[derive(Clone)]
pub struct Cipher {
    key: Arc<ring::aead::LessSafeKey>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(******)")
    }
}

const ENC_MAGIC: &[u8; 8] = b"CCRENC01";
const FRAME: usize = 1 << 20;

impl Cipher {
    pub fn from_passphrase(p: &Secret) -> Cipher {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"ccr-syncer backup key v1\0");
        ctx.update(p.expose().as_bytes());
        let digest = ctx.finish();
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, digest.as_ref())
            .expect("a 32-byte key");
        Cipher {
            key: Arc::new(ring::aead::LessSafeKey::new(unbound)),
        }
    }

    pub fn sealer(&self) -> Result<Sealer, String> {
        let mut prefix = [0u8; 4];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut prefix)
            .map_err(|_| "the system's random source failed".to_string())?;
        Ok(Sealer {
            cipher: self.clone(),
            prefix,
            n: 0,
            pending: Vec::new(),
            started: false,
        })
    }

    pub fn opener(&self) -> Opener {
        Opener {
            cipher: self.clone(),
            prefix: None,
            n: 0,
            buf: Vec::new(),
            ended: false,
        }
    }

    /// Seals bytes whole.
    pub fn seal_all(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut s = self.sealer()?;
        let mut out = s.push(plain)?;
        out.extend(s.finish()?);
        Ok(out)
    }

    /// Opens bytes whole.
    pub fn open_all(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let mut o = self.opener();
        let out = o.push(sealed)?;
        o.finish()?;
        Ok(out)
    }

    fn nonce(prefix: [u8; 4], n: u64) -> ring::aead::Nonce {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&prefix);
        b[4..].copy_from_slice(&n.to_be_bytes());
        ring::aead::Nonce::assume_unique_for_key(b)
    }
}

/// Seals a stream: bytes in, sealed frames out.
pub struct Sealer {
    cipher: Cipher,
    prefix: [u8; 4],
    n: u64,
    pending: Vec<u8>,
    started: bool,
}

impl Sealer {
    fn frame(&mut self, plain: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), String> {
        if !self.started {
            out.extend_from_slice(ENC_MAGIC);
            out.extend_from_slice(&self.prefix);
            self.started = true;
        }
        let mut data = plain.to_vec();
        let flag = [u8::from(last)];
        self.cipher
            .key
            .seal_in_place_append_tag(
                Cipher::nonce(self.prefix, self.n),
                ring::aead::Aad::from(flag),
                &mut data,
            )
            .map_err(|_| "sealing a frame failed".to_string())?;
        self.n += 1;
        out.push(flag[0]);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        Ok(())
    }

    pub fn push(&mut self, plain: &[u8]) -> Result<Vec<u8>, String> {
        self.pending.extend_from_slice(plain);
        let mut out = Vec::new();
        while self.pending.len() > FRAME {
            let rest = self.pending.split_off(FRAME);
            let chunk = std::mem::replace(&mut self.pending, rest);
            self.frame(&chunk, false, &mut out)?;
        }
        Ok(out)
    }

    pub fn finish(mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let chunk = std::mem::take(&mut self.pending);
        self.frame(&chunk, true, &mut out)?;
        Ok(out)
    }
}

/// Opens a sealed stream: bytes in as they arrive, plain bytes out.
pub struct Opener {
    cipher: Cipher,
    prefix: Option<[u8; 4]>,
    n: u64,
    buf: Vec<u8>,
    ended: bool,
}

impl Opener {
    pub fn push(&mut self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        self.buf.extend_from_slice(sealed);
        let mut out = Vec::new();
        if self.prefix.is_none() {
            if self.buf.len() < 12 {
                return Ok(out);
            }
            if &self.buf[..8] != ENC_MAGIC {
                return Err("not encrypted by ccr-syncer (or not with this format)".into());
            }
            self.prefix = Some(self.buf[8..12].try_into().expect("4 bytes"));
            self.buf.drain(..12);
        }
        let prefix = self.prefix.expect("set above");
        loop {
            if self.buf.len() < 5 {
                return Ok(out);
            }
            if self.ended {
                return Err("bytes after the last encrypted frame".into());
            }
            let len = u32::from_le_bytes(self.buf[1..5].try_into().expect("4 bytes")) as usize;
            if len > FRAME + 64 {
                return Err("an encrypted frame of an impossible size".into());
            }
            if self.buf.len() < 5 + len {
                return Ok(out);
            }
            let flag = [self.buf[0]];
            let mut data = self.buf[5..5 + len].to_vec();
            self.buf.drain(..5 + len);
            let plain = self
                .cipher
                .key
                .open_in_place(
                    Cipher::nonce(prefix, self.n),
                    ring::aead::Aad::from(flag),
                    &mut data,
                )
                .map_err(|_| {
                    "cannot decrypt: the backup_encrypt_key is not the one it was made with, or \
                     the object was altered"
                        .to_string()
                })?;
            out.extend_from_slice(plain);
            self.n += 1;
            if flag[0] == 1 {
                self.ended = true;
            }
        }
    }

    pub fn finish(&self) -> Result<(), String> {
        if self.ended && self.buf.is_empty() {
            Ok(())
        } else {
            Err("the encrypted object is cut off".into())
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of bytes, hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Location::parse("s3://b/p/q?endpoint=http://127.0.0.1:9000&region=eu").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "p/q".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: "eu".into()
            }
        );
        assert_eq!(
            Location::parse("file:///var/backups").unwrap(),
            Location::Dir {
                path: "/var/backups".into()
            }
        );
        for bad in [
            "hdfs://x",
            "s3://",
            "s3://b?endpoint=ftp://x",
            "s3://b?secret=x",
            "file://rel",
            "file:///a/../b",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
        let (h, p, t) = Location::parse("s3://b?endpoint=http://10.0.0.1:9000")
            .unwrap()
            .describe();
        assert_eq!((h.as_str(), p.as_str(), t), ("10.0.0.1", "9000", "S3"));
    }

    #[test]
    fn encryption_round_trips_and_refuses_tampering() {
        let c = Cipher::from_passphrase(&Secret::new("a backup key"));
        let plain: Vec<u8> = (0..(3 * FRAME + 17)).map(|i| (i % 251) as u8).collect();
        let sealed = c.seal_all(&plain).unwrap();
        assert_ne!(&sealed[12..40], &plain[..28]);
        assert_eq!(c.open_all(&sealed).unwrap(), plain);
        // Streamed in odd pieces.
        let mut o = c.opener();
        let mut got = Vec::new();
        for piece in sealed.chunks(7777) {
            got.extend(o.push(piece).unwrap());
        }
        o.finish().unwrap();
        assert_eq!(got, plain);
        // Another key, a flipped byte, a cut-off object: refused.
        let other = Cipher::from_passphrase(&Secret::new("another key"));
        assert!(other.open_all(&sealed).is_err());
        let mut bad = sealed.clone();
        bad[100] ^= 1;
        assert!(c.open_all(&bad).is_err());
        assert!(c.open_all(&sealed[..sealed.len() - 30]).is_err());
        assert!(c.open_all(&c.seal_all(b"").unwrap()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_directory_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(&format!("file://{}", dir.path().display()), None).unwrap();
        let mut up = s.upload("a/b/one").await.unwrap();
        up.write(b"hello ").await.unwrap();
        up.write(b"world").await.unwrap();
        let stored = up.finish().await.unwrap();
        assert_eq!(stored.bytes, 11);
        assert_eq!(stored.sha256, sha256(b"hello world"));
        s.put("a/c", b"x".to_vec()).await.unwrap();
        let keys: Vec<String> = s
            .list("a")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(keys, vec!["a/b/one", "a/c"]);
        assert_eq!(s.get("a/b/one").await.unwrap(), b"hello world");
        assert_eq!(s.size("a/none").await.unwrap(), None);
        s.delete("a/c").await.unwrap();
        assert_eq!(s.list("a").await.unwrap().len(), 1);
        // An upload given up leaves no object.
        let mut up = s.upload("a/partial").await.unwrap();
        up.write(b"half").await.unwrap();
        up.abort().await;
        assert_eq!(s.size("a/partial").await.unwrap(), None);
    }
}
