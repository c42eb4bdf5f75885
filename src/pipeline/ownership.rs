//! One owner per UDP port and per spool folder, for the whole life of the process.
//!
//! Readers bind with `SO_REUSEPORT` (one socket per reader thread), which would also let a *second* engine of the
//! same user bind the same port: the kernel would then split the traffic between the two, and two engines with
//! one spool folder would corrupt it. So before anything binds or opens a spool, the engine takes:
//!
//! - **a port lock** per listen port ([`PortLock`]): a Unix socket bound to the abstract name
//!   `sense-ingest/udp/<port>`. Abstract names live in the network namespace, exactly like UDP ports, vanish when
//!   their process dies (no stale lock file after a SIGKILL), and cannot be taken twice. The lock is keyed by the
//!   port alone: two engines on one port but different addresses of one host are refused too, since with a
//!   wildcard on either side they would share datagrams. A second engine asks the holder's pid with
//!   `SO_PEERCRED`. Engines in other network namespaces (containers) do not see each other, and need not.
//! - **a spool lock** ([`SpoolLock`]): `flock(2)` on `<spool.dir>/sense-ingest.lock`, which holds the owner's pid.
//!   The kernel releases it when the process ends, however it ends; the file itself stays (removing it would race
//!   with a starting engine).
//!
//! A second engine that finds either lock taken refuses to start with an error naming the first one's pid, before
//! it binds a socket or touches a spool. Port 0 (tests, tools) is locked once the kernel picked the port.
//!
//! Spool folders are named by [`crate::config::spool_folder_name`], unique per destination. Folders named the old,
//! not unique way are adopted at start-up ([`adopt_legacy_spools`]) so nothing spooled before an upgrade is lost.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tracing::info;

use crate::config::{legacy_spool_folder_name, spool_folder_name};

/// The lock file's name inside `spool.dir`.
pub const SPOOL_LOCK_FILE: &str = "sense-ingest.lock";

/// Why the engine may not own a port or a spool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OwnershipError {
    /// Another engine holds the port lock.
    #[error(
        "udp port {port} is in use by another sense-ingest ({owner}): two engines on one port would split the \
         datagrams between them; stop the other one or listen on another port"
    )]
    PortInUse {
        /// The port.
        port: u16,
        /// `pid N`, or why it is unknown.
        owner: String,
    },
    /// Another engine holds the spool lock.
    #[error(
        "spool folder {} is in use by another sense-ingest ({owner}): two engines must not share a spool; stop \
         the other one or give this one its own sense-ingest.spool.dir", dir.display()
    )]
    SpoolInUse {
        /// `spool.dir`.
        dir: PathBuf,
        /// `pid N`, or why it is unknown.
        owner: String,
    },
    /// An older version wrote one folder for several destinations whose names it mapped alike.
    #[error(
        "spool folder {} was written by an older version for {} together (it gave them one folder); its events \
         cannot be told apart, so none is sent: move the folder to {} to replay it for one of them, or out of \
         the spool folder to discard it",
        folder.display(), destinations.join(" and "), targets.join(" or ")
    )]
    LegacySpoolShared {
        /// The old folder.
        folder: PathBuf,
        /// The destinations it may belong to.
        destinations: Vec<String>,
        /// Their new folders.
        targets: Vec<String>,
    },
    /// Both the old folder and the new one hold data.
    #[error(
        "spool folders {} (older version) and {} (this version) both hold spooled events for {destination}: \
         replay one of them first (start the engine with the other moved away, then move it back)",
        legacy.display(), current.display()
    )]
    LegacyAndCurrentSpool {
        /// The destination.
        destination: String,
        /// The old folder.
        legacy: PathBuf,
        /// The new folder.
        current: PathBuf,
    },
    /// A file-system or socket call failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OwnershipError + 'a {
    move |source| OwnershipError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The exclusive lock on a spool folder, held until dropped (and by the kernel until the process ends).
#[derive(Debug)]
pub struct SpoolLock {
    /// The open lock file: closing it releases the `flock`.
    _file: File,
}

impl SpoolLock {
    /// Creates `dir` if needed and takes its lock without waiting, writing this process's pid into the lock file.
    pub fn acquire(dir: &Path) -> Result<SpoolLock, OwnershipError> {
        fs::create_dir_all(dir).map_err(io_error("cannot create the spool folder", dir))?;
        let path = dir.join(SPOOL_LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("cannot open the spool lock", &path))?;
        // SAFETY: `file` owns an open descriptor for the duration of the call; flock takes no pointers.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let owner = match file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse::<u32>().ok())
                {
                    Some(pid) => format!("pid {pid}"),
                    None => "pid not yet written".to_owned(),
                };
                return Err(OwnershipError::SpoolInUse {
                    dir: dir.to_path_buf(),
                    owner,
                });
            }
            return Err(OwnershipError::Io {
                what: "cannot lock the spool",
                path,
                source: e,
            });
        }
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(io_error("cannot write the spool lock", &path))?;
        Ok(SpoolLock { _file: file })
    }
}

/// The lock on a UDP port, held until dropped (and by the kernel until the process ends).
#[derive(Debug)]
pub struct PortLock {
    /// The listening socket bound to the abstract name; `None` where abstract names do not exist.
    _socket: Option<socket2::Socket>,
}

impl PortLock {
    /// Takes the lock of UDP `port` in this network namespace without waiting.
    #[cfg(target_os = "linux")]
    pub fn acquire(port: u16) -> Result<PortLock, OwnershipError> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let name = format!("\0sense-ingest/udp/{port}");
        let shown = PathBuf::from(format!("@sense-ingest/udp/{port}"));
        let addr = SockAddr::unix(&name).map_err(io_error("cannot name the port lock", &shown))?;
        let socket =
            Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_error("cannot create the port lock", &shown))?;
        match socket.bind(&addr) {
            Ok(()) => {
                socket
                    .listen(16)
                    .map_err(io_error("cannot hold the port lock", &shown))?;
                Ok(PortLock { _socket: Some(socket) })
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(OwnershipError::PortInUse {
                port,
                owner: match holder_pid(&addr) {
                    Ok(pid) => format!("pid {pid}"),
                    Err(e) => format!("pid unknown: {e}"),
                },
            }),
            Err(e) => Err(io_error("cannot take the port lock", &shown)(e)),
        }
    }

    /// Abstract socket names are Linux-only: elsewhere `SO_REUSEPORT` sharing is not guarded.
    #[cfg(not(target_os = "linux"))]
    pub fn acquire(_port: u16) -> Result<PortLock, OwnershipError> {
        Ok(PortLock { _socket: None })
    }
}

/// The pid of the process listening on the abstract Unix address `addr`, from `SO_PEERCRED`. The connect does not
/// wait: a holder whose backlog is full (after many refused starts) makes the pid unknown, never a hang.
#[cfg(target_os = "linux")]
fn holder_pid(addr: &socket2::SockAddr) -> io::Result<u32> {
    let probe = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    probe.connect(addr)?;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `probe` owns an open, connected socket for the duration of the call; `cred` and `len` are live,
    // writable locals and `len` holds `cred`'s exact size, as SO_PEERCRED requires.
    let rc = unsafe {
        libc::getsockopt(
            probe.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(cred.pid).map_err(|_| io::Error::other("no pid in this pid namespace"))
}

/// Adopts spool folders that an older version named the old way ([`legacy_spool_folder_name`]) for the
/// `destinations` configured now, by renaming each to its unique name ([`spool_folder_name`]) under `root`, so
/// its events are replayed as before the upgrade. Call it with the spool lock held, before any spool is opened.
///
/// Refuses (and changes nothing more) when an old folder may belong to several configured destinations (their
/// names mapped alike: `prod eu`, `prod_eu`), or when a destination has events in both its old and its new folder.
/// Empty old folders are removed. Returns the renames done, `(from, to)`.
pub fn adopt_legacy_spools(root: &Path, destinations: &[String]) -> Result<Vec<(PathBuf, PathBuf)>, OwnershipError> {
    let mut renamed = Vec::new();
    for destination in destinations {
        let (legacy, current) = (legacy_spool_folder_name(destination), spool_folder_name(destination));
        let (legacy_path, current_path) = (root.join(&legacy), root.join(&current));
        if legacy == current || !legacy_path.is_dir() {
            continue;
        }
        if is_empty_dir(&legacy_path)? {
            fs::remove_dir(&legacy_path).map_err(io_error("cannot remove the empty spool folder", &legacy_path))?;
            continue;
        }
        let sharing: Vec<&String> = destinations
            .iter()
            .filter(|d| legacy_spool_folder_name(d) == legacy)
            .collect();
        if sharing.len() > 1 {
            return Err(OwnershipError::LegacySpoolShared {
                folder: legacy_path,
                destinations: sharing.iter().map(|d| (*d).clone()).collect(),
                targets: sharing
                    .iter()
                    .map(|d| root.join(spool_folder_name(d)).display().to_string())
                    .collect(),
            });
        }
        if current_path.is_dir() {
            if !is_empty_dir(&current_path)? {
                return Err(OwnershipError::LegacyAndCurrentSpool {
                    destination: destination.clone(),
                    legacy: legacy_path,
                    current: current_path,
                });
            }
            fs::remove_dir(&current_path).map_err(io_error("cannot remove the empty spool folder", &current_path))?;
        }
        fs::rename(&legacy_path, &current_path).map_err(io_error("cannot rename the spool folder", &legacy_path))?;
        info!(
            sink = %destination, from = %legacy_path.display(), to = %current_path.display(),
            "spool folder of an older version adopted under its new name"
        );
        renamed.push((legacy_path, current_path));
    }
    Ok(renamed)
}

fn is_empty_dir(dir: &Path) -> Result<bool, OwnershipError> {
    Ok(fs::read_dir(dir)
        .map_err(io_error("cannot read the spool folder", dir))?
        .next()
        .is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_spool_lock_names_the_owner_and_is_free_again_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = SpoolLock::acquire(dir.path()).unwrap();
        let pid = std::process::id();
        assert_eq!(
            fs::read_to_string(dir.path().join(SPOOL_LOCK_FILE)).unwrap(),
            format!("{pid}\n")
        );
        let e = SpoolLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(e, OwnershipError::SpoolInUse { .. }));
        assert_eq!(
            e.to_string(),
            format!(
                "spool folder {} is in use by another sense-ingest (pid {pid}): two engines must not share a \
                 spool; stop the other one or give this one its own sense-ingest.spool.dir",
                dir.path().display()
            )
        );
        drop(first);
        SpoolLock::acquire(dir.path()).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_second_port_lock_names_the_owner_and_is_free_again_once_dropped() {
        // A port number no other test locks (tests bind port 0, and the kernel never picks 1).
        let first = PortLock::acquire(1).unwrap();
        let e = PortLock::acquire(1).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "udp port 1 is in use by another sense-ingest (pid {}): two engines on one port would split the \
                 datagrams between them; stop the other one or listen on another port",
                std::process::id()
            )
        );
        drop(first);
        PortLock::acquire(1).unwrap();
    }

    /// A spool folder with one segment file holding `content`.
    fn spool_with(dir: &Path, content: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("seg-00000000000000000000.spool"), content).unwrap();
    }

    #[test]
    fn an_old_folder_is_renamed_to_its_destination_s_unique_name() {
        let root = tempfile::tempdir().unwrap();
        spool_with(&root.path().join("new_relic_NR_account_B"), "B's events");
        spool_with(&root.path().join("influxdb"), "influx events");
        let names = ["influxdb".to_owned(), "new_relic:NR account B".to_owned()];
        let renamed = adopt_legacy_spools(root.path(), &names).unwrap();
        let current = root.path().join("new_relic%3ANR%20account%20B");
        assert_eq!(
            renamed,
            vec![(root.path().join("new_relic_NR_account_B"), current.clone())]
        );
        assert_eq!(
            fs::read_to_string(current.join("seg-00000000000000000000.spool")).unwrap(),
            "B's events"
        );
        assert!(
            root.path().join("influxdb").is_dir(),
            "folders whose name did not change stay"
        );
        // Idempotent: the next start finds nothing to adopt.
        assert!(adopt_legacy_spools(root.path(), &names).unwrap().is_empty());
    }

    #[test]
    fn an_old_folder_two_destinations_shared_is_refused_and_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let old = root.path().join("new_relic_prod_eu");
        spool_with(&old, "mixed events");
        let names = ["new_relic:prod eu".to_owned(), "new_relic:prod_eu".to_owned()];
        let e = adopt_legacy_spools(root.path(), &names).unwrap_err();
        let r = root.path().display();
        assert_eq!(
            e.to_string(),
            format!(
                "spool folder {r}/new_relic_prod_eu was written by an older version for new_relic:prod eu and \
                 new_relic:prod_eu together (it gave them one folder); its events cannot be told apart, so none is \
                 sent: move the folder to {r}/new_relic%3Aprod%20eu or {r}/new_relic%3Aprod_eu to replay it for one \
                 of them, or out of the spool folder to discard it"
            )
        );
        assert!(old.join("seg-00000000000000000000.spool").is_file());
    }

    #[test]
    fn events_in_both_the_old_and_the_new_folder_are_refused() {
        let root = tempfile::tempdir().unwrap();
        spool_with(&root.path().join("new_relic_A"), "old");
        spool_with(&root.path().join("new_relic%3AA"), "new");
        let e = adopt_legacy_spools(root.path(), &["new_relic:A".to_owned()]).unwrap_err();
        assert!(matches!(e, OwnershipError::LegacyAndCurrentSpool { .. }), "{e}");
    }

    #[test]
    fn an_empty_old_folder_is_removed_and_an_empty_new_one_replaced() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("new_relic_A")).unwrap();
        assert!(adopt_legacy_spools(root.path(), &["new_relic:A".to_owned()])
            .unwrap()
            .is_empty());
        assert!(!root.path().join("new_relic_A").exists());
        spool_with(&root.path().join("new_relic_A"), "old");
        fs::create_dir_all(root.path().join("new_relic%3AA")).unwrap();
        assert_eq!(
            adopt_legacy_spools(root.path(), &["new_relic:A".to_owned()])
                .unwrap()
                .len(),
            1
        );
        assert!(!root.path().join("new_relic_A").exists());
    }
}
