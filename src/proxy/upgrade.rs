//! An upgraded exchange (WebSocket and the like): the client's connection
//! and the endpoint's, spliced once the 101 is written.

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::listener::upgrade::OnUpgrade;

/// Copies bytes both ways between an upgraded client and endpoint
/// connection, starting with what the endpoint sent after its 101.
pub(super) async fn splice(downstream: OnUpgrade, upstream: (TcpStream, Bytes)) {
    let Ok(mut client) = downstream.await else {
        tracing::debug!("upgrade failed: the client connection ended first");
        return;
    };
    let (mut server, early) = upstream;
    let result = async {
        client.write_all(&early).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await
    };
    if let Err(error) = result.await {
        tracing::debug!(%error, "upgraded connection ended");
    }
}
