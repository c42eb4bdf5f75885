//! Reader policy: which receive backend a reader thread runs, and the fallback. io_uring unless the config says
//! `recvmmsg` (or the kernel, a seccomp profile or a failure refuses it), recvmmsg otherwise; the cause of a
//! fallback is logged once. At shutdown the socket is drained of what is already queued before the thread returns.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use tracing::{error, info, warn};

use super::recvmmsg::RecvmmsgReceiver;
use super::{ReaderCore, ReaderShared};
use crate::config::ReaderBackend;

/// The backend a reader ended up using.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendInUse {
    /// io_uring multishot recvmsg.
    IoUring,
    /// recvmmsg.
    Recvmmsg,
}

impl BackendInUse {
    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendInUse::IoUring => "io_uring",
            BackendInUse::Recvmmsg => "recvmmsg",
        }
    }
}

/// One reader thread's body on `sock` (bound to `bound`; `index` within its group): io_uring unless `backend`
/// says otherwise or it is unavailable, recvmmsg as the fallback. `in_use` is set to the backend that runs (for
/// `/metrics`).
pub fn run_reader(
    sock: UdpSocket,
    shared: Arc<ReaderShared>,
    backend: ReaderBackend,
    bound: SocketAddr,
    index: usize,
    in_use: Arc<Mutex<&'static str>>,
) {
    let set_in_use = |b: BackendInUse| *in_use.lock().unwrap_or_else(|e| e.into_inner()) = b.as_str();
    let mut core = ReaderCore::new(shared);
    let mut fallback = RecvmmsgReceiver::new(core.max_message_size());
    #[cfg(target_os = "linux")]
    if backend != ReaderBackend::Recvmmsg {
        match super::uring::UringReceiver::new(&sock, core.max_message_size()) {
            Ok(mut rx) => {
                set_in_use(BackendInUse::IoUring);
                info!(addr = %bound, backend = BackendInUse::IoUring.as_str(), reader = index, "listening");
                let result = rx.run(&mut core);
                drop(rx); // closes the ring, cancelling the multishot request, before the socket is drained
                match result {
                    Ok(()) => {
                        fallback.drain(&sock, &mut core);
                        return;
                    }
                    Err(e) => warn!(error = %e, reader = index, "io_uring receive failed; falling back to recvmmsg"),
                }
            }
            Err(reason) => {
                if index == 0 {
                    let asked = if backend == ReaderBackend::IoUring {
                        " (io_uring was asked for explicitly)"
                    } else {
                        ""
                    };
                    warn!(%reason, "io_uring unavailable{asked}; using recvmmsg");
                }
            }
        }
    }
    set_in_use(BackendInUse::Recvmmsg);
    info!(addr = %bound, backend = BackendInUse::Recvmmsg.as_str(), reader = index, "listening");
    if let Err(e) = fallback.run(&sock, &mut core) {
        error!(error = %e, reader = index, "receive loop failed; this reader stopped");
    }
}
