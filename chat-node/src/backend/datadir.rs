//! The embedded node's data directory (`PARLEY_DATA_DIR`): the SQLite database with every
//! message, DM and password hash, the JWT and blob-signing secrets, and the uploaded media.
//! Only the node's own user may read it: directories are created `0700` and files `0600`
//! (whatever the umask), and a directory found looser at start (made by hand or by an older
//! version, typically `0755` with `0644` files) is tightened, with a warning naming the old
//! mode. What cannot be tightened (not the owner) is warned about, not fatal: the node still
//! starts. Only the directory itself and its direct entries are tightened at start (the media
//! tree can be large); everything below is reached through them, and new media files and
//! directories are created private.

use std::io;
use std::path::Path;

/// Mode of the directories the node creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files the node creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents `0700`.
pub fn create_private_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir)
}

/// [`create_private_dirs`] on tokio's blocking pool.
pub async fn create_private_dirs_async(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || create_private_dirs(&dir))
        .await
        .map_err(io::Error::other)?
}

/// Options that create a new file `0600` for writing; an existing one is an error
/// (`AlreadyExists`).
pub fn new_private_file() -> tokio::fs::OpenOptions {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(FILE_MODE);
    options
}

/// Prepares the data directory at start: creates it `0700` if missing, and tightens it
/// (`0700`) and its direct entries (directories `0700`, files `0600`) where they allow more.
pub fn prepare(dir: &Path) -> io::Result<()> {
    create_private_dirs(dir)?;
    tighten(dir, DIR_MODE);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            tighten(&entry.path(), DIR_MODE);
        } else if kind.is_file() {
            tighten(&entry.path(), FILE_MODE);
        }
    }
    Ok(())
}

/// Takes away every permission bit of `path` beyond `allowed`; warns when it had any (and
/// when they cannot be taken away).
#[cfg(unix)]
fn tighten(path: &Path, allowed: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & !allowed == 0 {
        return;
    }
    let tightened = mode & allowed;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(tightened)) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            "the data directory held {mode:04o} (readable beyond the node's user); tightened to {tightened:04o}"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            "the data directory holds {mode:04o} (readable beyond the node's user) and cannot be tightened: {e}"
        ),
    }
}

#[cfg(not(unix))]
fn tighten(_: &Path, _: u32) {}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_private_and_tightens_loose_entries() {
        let root = std::env::temp_dir().join(format!(
            "parley-datadir-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let dir = root.join("a/b");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.join("a")), 0o700, "missing parents too");

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("parley.db"), b"").unwrap();
        std::fs::set_permissions(
            dir.join("parley.db"),
            std::fs::Permissions::from_mode(0o664),
        )
        .unwrap();
        std::fs::create_dir(dir.join("media")).unwrap();
        std::fs::set_permissions(dir.join("media"), std::fs::Permissions::from_mode(0o775))
            .unwrap();
        std::fs::write(dir.join("jwt-secret"), b"x").unwrap();
        std::fs::set_permissions(
            dir.join("jwt-secret"),
            std::fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("parley.db")), 0o600);
        assert_eq!(mode(&dir.join("media")), 0o700);
        assert_eq!(
            mode(&dir.join("jwt-secret")),
            0o400,
            "tighter modes are left alone"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
