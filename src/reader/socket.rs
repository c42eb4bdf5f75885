//! Receive sockets: one `SO_REUSEPORT` group per listen address, a large receive buffer, and the kernel's drop
//! counter for each socket.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};
use tracing::warn;

/// Binds `count` sockets to `addr` with `SO_REUSEPORT`, so each reader thread has its own receive queue. With
/// port 0 the first socket picks a free port and the others join it. IPv6 wildcard sockets also receive IPv4
/// (`IPV6_V6ONLY` off).
pub fn bind_group(addr: SocketAddr, count: usize, recv_buffer_bytes: usize) -> io::Result<Vec<UdpSocket>> {
    let mut addr = addr;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            sock.set_only_v6(false)?;
        }
        sock.set_reuse_port(true)?;
        set_recv_buffer(&sock, recv_buffer_bytes);
        sock.bind(&addr.into())?;
        let sock: UdpSocket = sock.into();
        if addr.port() == 0 {
            addr = sock.local_addr()?;
        }
        out.push(sock);
    }
    Ok(out)
}

/// Sets `SO_RCVBUF` to `bytes`: `SO_RCVBUFFORCE` first (works as root / CAP_NET_ADMIN, ignores `rmem_max`), then
/// plain `SO_RCVBUF`. Warns once per socket when the kernel granted less than asked, saying how to raise it.
fn set_recv_buffer(sock: &Socket, bytes: usize) {
    let forced = force_recv_buffer(sock, bytes).is_ok();
    if !forced {
        let _ = sock.set_recv_buffer_size(bytes);
    }
    // Linux reports twice the usable size it granted.
    let granted = sock.recv_buffer_size().map_or(0, |b| b / 2);
    if granted < bytes {
        warn!(
            asked = bytes,
            granted,
            "kernel capped the UDP receive buffer; bursts may be dropped by the kernel (counted as kernel_drops). \
             Raise it with: sysctl -w net.core.rmem_max={bytes}"
        );
    }
}

#[cfg(target_os = "linux")]
fn force_recv_buffer(sock: &Socket, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is a valid open socket owned by `sock`; `value` is a c_int that lives across the call and
    // its size is passed exactly.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn force_recv_buffer(_sock: &Socket, _bytes: usize) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The inode of a socket, the key of its line in `/proc/net/udp*`.
pub fn socket_inode(sock: &UdpSocket) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let path = format!("/proc/self/fd/{}", sock.as_raw_fd());
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Sums the kernel's receive-buffer drop counters of the sockets with these inodes, from `/proc/net/udp` and
/// `/proc/net/udp6` (last column, `drops`). Returns `None` where those files cannot be read.
pub fn kernel_drops(inodes: &[u64]) -> Option<u64> {
    let mut total = 0;
    let mut read_any = false;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        read_any = true;
        total += drops_in_proc_table(&text, inodes);
    }
    read_any.then_some(total)
}

/// Sums the kernel's receive-buffer drop counters of `socks`: `SO_MEMINFO`'s `SK_MEMINFO_DROPS`, the counter
/// `/proc/net/udp*` shows as `drops` ([`kernel_drops`]), read in a few microseconds per socket where those tables
/// cost hundreds of microseconds to read on a host with many sockets. `None` when the kernel refuses the option
/// (Linux before 4.6).
pub fn socket_drops(socks: &[UdpSocket]) -> Option<u64> {
    const SK_MEMINFO_DROPS: usize = 8;
    const SK_MEMINFO_VARS: usize = 9;
    let mut total = 0;
    for sock in socks {
        let mut info = [0u32; SK_MEMINFO_VARS];
        let mut len = size_of_val(&info) as libc::socklen_t;
        // SAFETY: `info` is a writable buffer of `len` bytes on our stack and `len` a valid socklen_t; the kernel
        // writes at most `len` bytes and stores the length it wrote back into `len`.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 || (len as usize) < (SK_MEMINFO_DROPS + 1) * size_of::<u32>() {
            return None;
        }
        total += u64::from(info[SK_MEMINFO_DROPS]);
    }
    Some(total)
}

/// Parses a `/proc/net/udp*` table and sums `drops` over the lines whose inode is in `inodes`.
pub fn drops_in_proc_table(text: &str, inodes: &[u64]) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = cols.get(9)?.parse().ok()?;
            let drops: u64 = cols.last()?.parse().ok()?;
            inodes.contains(&inode).then_some(drops)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_summed_for_our_inodes_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
 1: 0100007F:4E1D 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 17\n\
 2: 0100007F:4E1E 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 9999 2 0000000000000000 5\n";
        assert_eq!(drops_in_proc_table(table, &[1234]), 17);
        assert_eq!(drops_in_proc_table(table, &[1234, 9999]), 22);
        assert_eq!(drops_in_proc_table(table, &[42]), 0);
    }

    #[test]
    fn socket_drops_reads_the_counter_the_proc_table_shows() {
        let socks = bind_group("127.0.0.1:0".parse().unwrap(), 1, 4096).unwrap();
        let target = socks[0].local_addr().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(socket_drops(&socks), Some(0));
        // A 4 KiB buffer (the kernel doubles it) overflows long before 200 datagrams of 1000 bytes; loopback
        // delivery happens inside send, so the drops are counted when the loop ends.
        for _ in 0..200 {
            sender.send_to(&[b'x'; 1000], target).unwrap();
        }
        let drops = socket_drops(&socks).unwrap();
        assert!(drops > 100, "{drops}");
        let inode = socket_inode(&socks[0]).unwrap();
        assert_eq!(kernel_drops(&[inode]), Some(drops), "the same counter as /proc/net/udp");
    }

    #[test]
    fn a_group_on_port_zero_shares_one_port() {
        let socks = bind_group("127.0.0.1:0".parse().unwrap(), 3, 1 << 20).unwrap();
        let port = socks[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(socks.iter().all(|s| s.local_addr().unwrap().port() == port));
        assert!(socket_inode(&socks[0]).is_some());
    }
}
