//! File writing that never leaves a half-written file behind.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: into a temporary file in the same folder, flushed to disk,
/// then renamed over `path`. A crash leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| Error::invalid(format!("{}: not a file name", path.display())))?;
    let temporary = folder.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        Error::io(path, source)
    })
}

/// Name of the lock file [`OutputLock`] holds in an output folder.
pub const LOCK_FILE: &str = ".wgpu-cnn.lock";

/// One writer per output folder: an OS lock on `<folder>/.wgpu-cnn.lock` (held until dropped,
/// released by the OS if the process dies), with the holder's process id written in the file so
/// that a second run can say who holds it.
#[derive(Debug)]
pub struct OutputLock {
    _file: std::fs::File,
    pub folder: std::path::PathBuf,
}

impl OutputLock {
    /// Creates `folder` if needed and takes its lock, or fails naming the process that holds it.
    /// Then removes the temporary files [`write_atomic`] left there when a writer died mid-write:
    /// with the lock held, no other process of ours writes in this folder.
    pub fn acquire(folder: &Path) -> Result<Self> {
        if folder.exists() && !folder.is_dir() {
            return Err(Error::invalid(format!(
                "{}: not a folder (a file of that name is there); choose another --out",
                folder.display()
            )));
        }
        std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
        let path = folder.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
                return Err(Error::invalid(format!(
                    "{}: another wgpu-cnn run ({who}) is writing to this folder; wait for it to finish or use another --out",
                    folder.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|_| file.write_all(pid.as_bytes()))
            .and_then(|_| file.flush())
            .map_err(|e| Error::io(&path, e))?;
        remove_stale_temporaries(folder);
        Ok(OutputLock { _file: file, folder: folder.to_path_buf() })
    }
}

/// Removes `.<name>.<pid>.tmp` files of [`write_atomic`] in `folder` (best effort).
fn remove_stale_temporaries(folder: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_temporary = name.starts_with('.')
            && name
                .strip_suffix(".tmp")
                .and_then(|rest| rest.rsplit_once('.'))
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if is_temporary {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // WASI has neither file locks nor processes; a page writes no folders.
    #[cfg_attr(target_os = "wasi", ignore = "WASI has no file locks")]
    fn a_second_writer_is_refused_with_the_holder_s_process_id_and_stale_temporaries_go() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".model.safetensors.99999999.tmp"), b"torn").unwrap();
        std::fs::write(dir.path().join("keep.tmp"), b"not ours").unwrap();
        let first = OutputLock::acquire(dir.path()).unwrap();
        assert!(!dir.path().join(".model.safetensors.99999999.tmp").exists(), "a dead writer's temporary file stays");
        assert!(dir.path().join("keep.tmp").exists());
        let message = OutputLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains(&format!("process {}", std::process::id())) && message.contains("another --out"),
            "{message}"
        );
        drop(first);
        OutputLock::acquire(dir.path()).expect("the lock is free again once dropped");
    }
}
