//! `coldbackup` (its progress in bytes copied of about the datadir's) and
//! `coldrestore` of a managed instance with
//! `mariadb-backup`, to and from the agent's backup directory (standing in
//! for the seed's HDFS): a backup is taken, prepared and packed as
//! `<backup-dir>/<port>/coldback_<UTC time>.tgz`; a restore stops the
//! instance, sets its datadir aside (`data.before-restore-<time>`), copies
//! the backup back and starts it. The account's password goes to
//! `mariadb-backup` in a `0600` option file that is removed after, never on
//! a command line (where any user of the machine could read it).

use super::instance::{program, Instance};
use crate::protocol::Progress;
use crate::secret::Secret;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cmd`; its error output when it fails.
async fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let what = what.to_string();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| format!("{what}: {e}"))?
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        Err(format!(
            "{what} failed: {}",
            crate::redact::text(&tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
        ))
    }
}

/// An option file with the account, readable by its owner only, removed
/// when dropped.
pub struct Credentials(PathBuf);

impl Credentials {
    pub fn write(dir: &Path, user: &str, password: &Secret) -> Result<Credentials, String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("backup-{}-{n}.cnf", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        writeln!(f, "[client]\nuser={user}\npassword={}", password.expose())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Credentials(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%d_%H%M%S").to_string()
}

/// Takes a backup of `instance`; the packed file.
pub async fn backup(
    instance: &Instance,
    backup_dir: &Path,
    state_dir: &Path,
    user: &str,
    password: &Secret,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Value, String> {
    let tool = program("mariadb-backup")?;
    let dir = backup_dir.join(instance.port.to_string());
    let name = format!("coldback_{}", stamp());
    let target = dir.join(&name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&target);
    let creds = Credentials::write(state_dir, user, password)?;
    let mut cmd = Command::new(&tool);
    cmd.arg(format!("--defaults-extra-file={}", creds.0.display()))
        .arg("--backup")
        .arg(format!("--socket={}", instance.socket().display()))
        .arg(format!("--datadir={}", instance.dir.join("data").display()))
        .arg(format!("--target-dir={}", target.display()));
    // Bytes copied so far (the target's size) of about the datadir's.
    let total = dir_bytes(&instance.dir.join("data"));
    let copied = || Progress {
        done: dir_bytes(&target),
        total: Some(total),
        phase: "copying".into(),
    };
    watched(run(cmd, "mariadb-backup --backup"), &copied, progress).await?;
    let mut cmd = Command::new(&tool);
    cmd.arg("--prepare")
        .arg(format!("--target-dir={}", target.display()));
    let prepared = || Progress {
        phase: "preparing".into(),
        ..copied()
    };
    watched(run(cmd, "mariadb-backup --prepare"), &prepared, progress).await?;
    let file = dir.join(format!("{name}.tgz"));
    let mut cmd = Command::new("tar");
    cmd.arg("-czf").arg(&file).arg("-C").arg(&dir).arg(&name);
    let packed = || Progress {
        done: std::fs::metadata(&file).map_or(0, |m| m.len()),
        total: None,
        phase: "packing".into(),
    };
    watched(run(cmd, "packing the backup"), &packed, progress).await?;
    progress(Progress {
        phase: "done".into(),
        ..packed()
    });
    let _ = std::fs::remove_dir_all(&target);
    Ok(json!({"file": file, "port": instance.port}))
}

/// Uploads a packed cold backup to the storage
/// (`coldbackup/HOST/PORT/NAME.tgz`), hashed as it goes, confirms its size
/// there, and removes the local file.
pub async fn upload(
    s: &crate::storage::Storage,
    host: &str,
    taken: &Value,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Value, String> {
    use tokio::io::AsyncReadExt;
    let file = PathBuf::from(taken["file"].as_str().ok_or("the backup made no file")?);
    let port = taken["port"].as_u64().unwrap_or(0);
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or("the backup file has no name")?;
    let key = format!("coldbackup/{host}/{port}/{name}");
    let total = std::fs::metadata(&file).map_or(0, |m| m.len());
    let mut f = tokio::fs::File::open(&file)
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let mut up = s.upload(&key).await?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                up.abort().await;
                return Err(format!("{}: {e}", file.display()));
            }
        };
        if let Err(e) = up.write(&buf[..n]).await {
            up.abort().await;
            return Err(e);
        }
        progress(Progress {
            done: up.bytes(),
            total: Some(total),
            phase: format!("uploading to {}", s.url),
        });
    }
    let stored = up.finish().await?;
    if s.size(&key).await? != Some(stored.bytes) {
        return Err(format!("{key} was not stored whole"));
    }
    let _ = std::fs::remove_file(&file);
    Ok(
        json!({"file": format!("/{key}"), "storage": s.url, "bytes": stored.bytes,
              "sha256": stored.sha256, "port": port}),
    )
}

/// `coldrestore` of `file`: a key in the backup storage (when the agent has
/// one and `file` is not in its backup directory), else a file there.
pub async fn restore_named(
    i: &Instance,
    backup_dir: &Path,
    storage: Option<&str>,
    s3: Option<&crate::storage::Credentials>,
    file: &str,
) -> Result<Value, String> {
    match storage {
        Some(url) if !file.starts_with(&*backup_dir.to_string_lossy()) => {
            let s = crate::storage::Storage::open(url, s3)?;
            let local = download(&s, file, i).await?;
            let r = restore(i, &local).await;
            let _ = std::fs::remove_file(&local);
            r
        }
        _ => restore(i, &backup_file(backup_dir, file)?).await,
    }
}

/// Reads a cold backup (`file`: its key in the storage, as `coldbackup`
/// answered it) into the instance's directory; the local copy.
pub async fn download(
    s: &crate::storage::Storage,
    file: &str,
    instance: &Instance,
) -> Result<PathBuf, String> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let key = file.trim_start_matches('/');
    if !key.starts_with("coldbackup/") || !key.ends_with(".tgz") || key.contains("..") {
        return Err(format!(
            "file {file:?} is not a cold backup in the backup storage (/coldbackup/HOST/PORT/NAME.tgz)"
        ));
    }
    let local = instance.dir.join("restore-download.tgz");
    let mut out = tokio::fs::File::create(&local)
        .await
        .map_err(|e| format!("{}: {e}", local.display()))?;
    let mut body = s.stream(key).await?;
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk?)
            .await
            .map_err(|e| format!("{}: {e}", local.display()))?;
    }
    out.flush().await.map_err(|e| e.to_string())?;
    Ok(local)
}

/// Runs `work`, reporting `now()` every second until it ends.
async fn watched(
    work: impl std::future::Future<Output = Result<(), String>>,
    now: &(dyn Fn() -> Progress + Sync),
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(), String> {
    tokio::pin!(work);
    loop {
        progress(now());
        tokio::select! {
            r = &mut work => return r,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// The bytes of the files under `dir` (0 for what cannot be read).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// The backup file named by a request, which must lie in the backup
/// directory.
pub fn backup_file(backup_dir: &Path, file: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(file);
    let inside = path.is_absolute()
        && path.starts_with(backup_dir)
        && !path.components().any(|c| c.as_os_str() == "..");
    if !inside || !file.ends_with(".tgz") {
        return Err(format!(
            "file {file:?} is not a .tgz in the agent's backup directory {}",
            backup_dir.display()
        ));
    }
    if !path.is_file() {
        return Err(format!("no backup file {file}"));
    }
    Ok(path)
}

/// Restores `instance` from `file` (stopped, datadir set aside, copied
/// back, started).
pub async fn restore(instance: &Instance, file: &Path) -> Result<Value, String> {
    let tool = program("mariadb-backup")?;
    let work = instance.dir.join("restore");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut cmd = Command::new("tar");
    cmd.arg("-xzf").arg(file).arg("-C").arg(&work);
    run(cmd, "unpacking the backup").await?;
    let unpacked = std::fs::read_dir(&work)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .ok_or("the backup file holds no backup directory")?;
    instance.stop().await?;
    let data = instance.dir.join("data");
    let aside = instance
        .dir
        .join(format!("data.before-restore-{}", stamp()));
    if data.exists() {
        std::fs::rename(&data, &aside).map_err(|e| format!("{}: {e}", data.display()))?;
    }
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let mut cmd = Command::new(&tool);
    cmd.arg("--copy-back")
        .arg(format!("--target-dir={}", unpacked.display()))
        .arg(format!("--datadir={}", data.display()));
    run(cmd, "mariadb-backup --copy-back").await?;
    let _ = std::fs::remove_dir_all(&work);
    instance.start().await?;
    Ok(json!({"restored_from": file, "port": instance.port, "previous_datadir": aside}))
}
