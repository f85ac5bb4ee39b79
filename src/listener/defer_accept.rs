//! `defer_accept`: the kernel hands a listener a connection once its first
//! bytes have come (TCP_DEFER_ACCEPT on Linux), not when the handshake
//! completes. A client of HTTP, TLS or HTTP/2 speaks first, so the bytes
//! come right after the handshake and the connection is read as it is
//! accepted: one wake-up of the connection's task and one readiness event
//! fewer per connection, and the kernel does less for it too. Under
//! `Connection: close` load that is about a fifth less CPU per request
//! (docs/performance-notebook.md, "Deferred accept").
//!
//! A connection that sends nothing is handed over after about a second
//! (the kernel resends its SYN-ACK once, and accepts it at the client's
//! answer): only then is it counted and do its timeouts start. Connecting
//! without sending costs fulcrum nothing until then.
//!
//! This file holds the crate's only `unsafe` block: neither the standard
//! library (on stable) nor socket2 sets this option.

use std::io;
use std::os::fd::AsFd;
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, BorrowedFd};

/// How long the kernel waits for a silent connection's first bytes, in
/// seconds (it rounds to whole SYN-ACK retransmissions: one).
#[cfg(target_os = "linux")]
const SECONDS: libc::c_int = 1;

/// Turns deferred accept on or off for the listening socket `socket`.
#[cfg(target_os = "linux")]
pub(super) fn set(socket: &impl AsFd, on: bool) -> io::Result<()> {
    set_option(socket.as_fd(), if on { SECONDS } else { 0 })
}

/// Elsewhere there is no such option: off is all there is.
#[cfg(not(target_os = "linux"))]
pub(super) fn set(_socket: &impl AsFd, on: bool) -> io::Result<()> {
    if on {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "defer_accept needs Linux (TCP_DEFER_ACCEPT)",
        ));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_option(socket: BorrowedFd<'_>, seconds: libc::c_int) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("an int's size fits");
    // SAFETY: `socket` is an open descriptor, borrowed for the call; the
    // value points to a live `c_int` and `len` is its size, which is what
    // TCP_DEFER_ACCEPT reads. Nothing is written through a pointer.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const seconds).cast(),
            len,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
