//! Reading a file cmesh did not write, with bounded memory and time whatever it is: the file
//! is opened without blocking (a FIFO or a device answers at once), checked to be a regular
//! file on the open handle itself (so a link swapped after a check cannot fool it), checked
//! for size before a byte is read, and read through a limit (a file that grows while being
//! read stops at the limit).

use std::io::Read;
use std::path::Path;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BoundedReadError {
    /// Not a regular file (a directory, FIFO, socket or device, possibly behind a link).
    #[error("not a regular file ({kind})")]
    NotRegular {
        /// What it is.
        kind: &'static str,
    },
    /// Larger than the limit.
    #[error("{size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Its size (at least this much).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The file system said no.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl BoundedReadError {
    /// True when nothing exists at the path (a dangling link included).
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, BoundedReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads `path` (following links) if it is a regular file of at most `limit` bytes.
///
/// # Errors
/// [`BoundedReadError`].
pub(crate) fn read(path: &Path, limit: u64) -> Result<Vec<u8>, BoundedReadError> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading blocks until a writer comes, unless non-blocking.
        o.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    let f = o.open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(BoundedReadError::NotRegular {
            kind: kind_of(&meta),
        });
    }
    if meta.len() > limit {
        return Err(BoundedReadError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(BoundedReadError::TooLarge {
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_large_files_are_refused_without_reading() {
        let t = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            let zero = t.path().join("zero.yaml");
            std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
            assert!(matches!(
                read(&zero, 1024),
                Err(BoundedReadError::NotRegular { kind: "a device" })
            ));
            let fifo = t.path().join("fifo.yaml");
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &fifo,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap();
            assert!(matches!(
                read(&fifo, 1024),
                Err(BoundedReadError::NotRegular { kind: "a FIFO" })
            ));
        }
        let big = t.path().join("big.yaml");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(3 << 30)
            .unwrap();
        assert!(matches!(
            read(&big, 1024),
            Err(BoundedReadError::TooLarge { size, .. }) if size == 3 << 30
        ));
        let small = t.path().join("ok.yaml");
        std::fs::write(&small, "a: 1\n").unwrap();
        assert_eq!(read(&small, 1024).unwrap(), b"a: 1\n");
        assert!(read(&t.path().join("nope"), 1).unwrap_err().is_not_found());
    }
}
