//! A seccomp filter that refuses `io_uring_setup` with EPERM, as Docker's default profile (Engine 25+) does,
//! installed in the child between fork and exec: the engine then meets exactly what a container user's engine
//! meets, and must fall back to recvmmsg.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// `AUDIT_ARCH_*` of the architecture the tests run on (seccomp_data.arch): the filter refuses the syscall only
/// for this ABI and allows everything else.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

const fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Makes `command`'s process refuse `io_uring_setup` with EPERM (and nothing else) before it execs.
pub fn block_io_uring(command: &mut Command) {
    // SAFETY: the hook runs in the forked child before exec and only makes two async-signal-safe syscalls on data
    // that lives on the stack of the hook (built before the call, no allocation after the fork).
    unsafe {
        command.pre_exec(|| {
            let filter = [
                stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, DATA_ARCH),
                jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, AUDIT_ARCH, 0, 3),
                stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, DATA_NR),
                jump(
                    libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                    libc::SYS_io_uring_setup as u32,
                    0,
                    1,
                ),
                stmt(
                    libc::BPF_RET | libc::BPF_K,
                    libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
                ),
                stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
