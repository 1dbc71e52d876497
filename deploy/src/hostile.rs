//! Small tools for hostile-input and fault tests: a raw ZMTP peer over
//! plain TCP (to send what libzmq itself never would) and daemon logs
//! without their colour codes (a process's resident memory is in
//! [`memory`](crate::memory)).

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// A ZMTP 3.`minor` peer over plain TCP that has sent its greeting (NULL
/// mechanism) and a READY command naming `socket_type`; what follows is
/// up to the test.
pub fn zmtp_peer(
    addr: &str,
    port: u16,
    socket_type: &str,
    minor: u8,
) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect((addr, port))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    let mut greeting = vec![0xffu8, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 3, minor];
    let mut mechanism = b"NULL".to_vec();
    mechanism.resize(20, 0);
    greeting.extend(mechanism);
    greeting.push(0); // as-server
    greeting.extend([0u8; 31]);
    let mut ready = b"\x05READY\x0bSocket-Type".to_vec();
    ready.extend((socket_type.len() as u32).to_be_bytes());
    ready.extend(socket_type.as_bytes());
    greeting.push(0x04); // short command
    greeting.push(ready.len() as u8);
    greeting.extend(ready);
    s.write_all(&greeting)?;
    Ok(s)
}

/// The text without terminal colour sequences (`ESC [ ... m`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
