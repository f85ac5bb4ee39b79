//! The HTTP/1.1 rules (RFC 9112), in one place: fulcrum's own server side
//! (`h1_server`), its endpoint client (`upstream::h1`), the field rewrite
//! (`headers`) and the listener's watch over what hyper is handed all read
//! a message's framing, its `Connection` options and its chunk lines
//! through these functions, so that no two of them can disagree on where a
//! message ends.
//!
//! - [`fields`]: `Content-Length`, `Transfer-Encoding`, `Connection`
//!   tokens, the hop-by-hop list, `Host`, and the framing of a request.
//! - [`chunk`]: the chunk-size line, read and written.
//! - [`stream`]: follows the requests of a connection through the bytes
//!   hyper reads, head by head and body by body, and says which message a
//!   rule refuses.

pub mod chunk;
pub mod fields;
pub mod stream;

pub use fields::{Codings, Framing, Lengths, Refusal};
