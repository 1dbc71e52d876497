//! brine-sys: the socket queries Brine needs that neither nix nor socket2
//! nor rustix offers safely, so that every other crate can
//! `forbid(unsafe_code)`.
//!
//! - [`tcp_bytes_received`]: `TCP_INFO`'s `tcpi_bytes_received`, the bytes
//!   the kernel has taken in on a TCP connection since it opened.
//! - [`unread_bytes`]: `FIONREAD`, the bytes waiting in the receive queue.
//!
//! Used by the master's request-port guard (`brine_common::unfinished`) to
//! see how much a peer has sent that libzmq has not yet turned into
//! messages. Each function is one system call on a caller-owned descriptor
//! and fails (None) rather than guessing.

use std::os::fd::RawFd;

/// `tcpi_bytes_received` of the TCP socket `fd`; None if `fd` is not a TCP
/// socket or the kernel (older than 4.1) does not report it.
#[allow(unsafe_code)]
pub fn tcp_bytes_received(fd: RawFd) -> Option<u64> {
    // SAFETY: tcp_info is plain old data, valid when zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let mut len = size;
    // SAFETY: `info` is a live, writable tcp_info of `len` bytes, and the
    // kernel writes at most `len` bytes and stores the length it wrote.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // A kernel older than 4.1 stops before tcpi_bytes_received.
    let end = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_received) + 8;
    if rc != 0 || (len as usize) < end || len > size {
        return None;
    }
    Some(info.tcpi_bytes_received)
}

/// Bytes waiting unread in the receive queue of socket `fd` (`FIONREAD`).
#[allow(unsafe_code)]
pub fn unread_bytes(fd: RawFd) -> Option<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points
    // at a live c_int.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued as *mut libc::c_int) };
    if rc != 0 {
        return None;
    }
    u64::try_from(queued).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    #[test]
    fn counts_what_a_peer_sent_and_what_is_unread() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(&[7u8; 1000]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while unread_bytes(s.as_raw_fd()) != Some(1000) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(unread_bytes(s.as_raw_fd()), Some(1000));
        assert_eq!(tcp_bytes_received(s.as_raw_fd()), Some(1000));
    }

    #[test]
    fn not_a_tcp_socket_is_none() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(tcp_bytes_received(f.as_raw_fd()), None);
    }
}
