//! The connections from one client connection to the clusters it is sent to.
//!
//! A client connection's requests come one after another (HTTP/1.1), and most go
//! to the same cluster. So each client connection keeps its own connection to each
//! cluster it used (at most [`MAX_OPEN`]), opened on the first request and reused
//! for the next, and its own task drives them ([`Drive`], run beside the server
//! connection in [`super::serve`]). A request and its answer never leave that task:
//! no pool shared between connections and locked on every request, and no hand-off
//! to a connection task on another thread and back, which is what a pooled client
//! costs per request.
//!
//! The price is one cluster connection per client connection per cluster, held no
//! longer than the client connection (whose idle time the header timeout bounds).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ProxyBody;

/// Clusters one client connection keeps a connection to; the least recently used
/// is closed to open another.
const MAX_OPEN: usize = 4;

/// Time an open connection has to become ready for the next request before a new
/// one is opened instead.
const READY_WAIT: Duration = Duration::from_millis(100);

/// Time to open a connection to a cluster.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A cluster's answer on a connection that was open already; an unsent request
/// comes back in the error.
type Answer = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<ProxyBody>>>;

/// Why a request got no answer from a cluster.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    /// No connection could be opened: the request was not sent.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection failed with the request sent or partly sent.
    #[error("{0}")]
    Failed(#[from] hyper::Error),
}

/// One client connection's connections to clusters. Cloned into every request of
/// the connection and into its [`Drive`]; all run in the connection's task, so the
/// lock is never contended.
#[derive(Clone)]
pub(super) struct Upstreams(Arc<Mutex<Open>>);

#[derive(Default)]
struct Open {
    /// Most recently used last.
    conns: Vec<Upstream>,
    /// The id the next connection gets.
    next_id: u64,
    /// The connection task, woken when a connection is added for it to drive.
    waker: Option<Waker>,
}

struct Upstream {
    id: u64,
    endpoint: String,
    sender: client::SendRequest<ProxyBody>,
    connection: Pin<Box<client::Connection<TokioIo<TcpStream>, ProxyBody>>>,
}

impl Upstreams {
    pub(super) fn new() -> Self {
        Self(Arc::new(Mutex::new(Open::default())))
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` to the cluster at `endpoint` (`http://host[:port]`) on this
    /// client connection's open connection to it, or on a new one. A request the
    /// open connection turned down unsent (it was closing) goes on a new one.
    pub(super) async fn send(
        &self,
        endpoint: &str,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, SendError> {
        if let Some((id, ready)) = self.open_to(endpoint) {
            if !ready {
                // The previous answer has been read to its end, but the connection
                // may not have marked itself ready yet: it will at its next poll.
                let _ = tokio::time::timeout(READY_WAIT, self.ready(id)).await;
            }
            match self.try_send(id, request) {
                Ok(answer) => match answer.await {
                    Ok(response) => return Ok(response),
                    Err(mut e) => match e.take_message() {
                        // Not sent: the connection was closing. A new one gets it.
                        Some(unsent) => request = unsent,
                        None => return Err(SendError::Failed(e.into_error())),
                    },
                },
                Err(unsent) => request = unsent,
            }
        }
        let answer = self.connect(endpoint, request).await?;
        Ok(answer.await?)
    }

    /// The open connection to `endpoint`, and whether it takes a request now.
    fn open_to(&self, endpoint: &str) -> Option<(u64, bool)> {
        let mut open = self.lock();
        open.conns.retain(|c| !c.sender.is_closed());
        open.conns
            .iter()
            .find(|c| c.endpoint == endpoint)
            .map(|c| (c.id, c.sender.is_ready()))
    }

    /// Until connection `id` takes a request (or is gone).
    async fn ready(&self, id: u64) {
        std::future::poll_fn(|cx| {
            let mut open = self.lock();
            match open.conns.iter_mut().find(|c| c.id == id) {
                Some(c) => c.sender.poll_ready(cx).map(|_| ()),
                None => Poll::Ready(()),
            }
        })
        .await
    }

    /// Sends `request` on connection `id` if it takes one now; else gives it back.
    #[allow(clippy::result_large_err)]
    fn try_send(
        &self,
        id: u64,
        request: Request<ProxyBody>,
    ) -> Result<impl Future<Output = Answer> + use<>, Request<ProxyBody>> {
        let mut open = self.lock();
        let Some(i) = open
            .conns
            .iter()
            .position(|c| c.id == id && c.sender.is_ready())
        else {
            return Err(request);
        };
        let mut conn = open.conns.remove(i);
        let answer = conn.sender.try_send_request(request);
        open.conns.push(conn);
        Ok(answer)
    }

    /// Opens a connection to `endpoint` for this client connection's task to drive
    /// and sends `request` on it, closing the least recently used connection when
    /// [`MAX_OPEN`] are open.
    async fn connect(
        &self,
        endpoint: &str,
        request: Request<ProxyBody>,
    ) -> Result<impl Future<Output = hyper::Result<Response<Incoming>>> + use<>, SendError> {
        let authority = authority(endpoint).map_err(SendError::Connect)?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
            .await
            .map_err(|_| SendError::Connect(format!("no connection in {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = client::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        // A new connection takes its first request at once.
        let answer = sender.send_request(request);
        let mut open = self.lock();
        if open.conns.len() >= MAX_OPEN {
            open.conns.remove(0);
        }
        let id = open.next_id;
        open.next_id += 1;
        open.conns.push(Upstream {
            id,
            endpoint: endpoint.to_string(),
            sender,
            connection: Box::pin(connection),
        });
        if let Some(waker) = &open.waker {
            waker.wake_by_ref();
        }
        Ok(answer)
    }
}

/// `host:port` of an `http://` endpoint (port 80 when it names none).
pub(super) fn authority(endpoint: &str) -> Result<String, String> {
    let uri: hyper::Uri = endpoint
        .parse()
        .map_err(|e| format!("bad endpoint `{endpoint}`: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("endpoint `{endpoint}` is not an http:// URL"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("endpoint `{endpoint}` names no host"))?;
    Ok(format!("{host}:{}", uri.port_u16().unwrap_or(80)))
}

/// Drives a client connection's connections to clusters; never finishes (the
/// client connection's end drops it and them).
pub(super) struct Drive(Upstreams);

impl Drive {
    pub(super) fn new(upstreams: Upstreams) -> Self {
        Self(upstreams)
    }
}

impl Future for Drive {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut open = self.0.lock();
        if !open.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            open.waker = Some(cx.waker().clone());
        }
        open.conns
            .retain_mut(|c| match c.connection.as_mut().poll(cx) {
                Poll::Pending => true,
                Poll::Ready(result) => {
                    if let Err(e) = result {
                        tracing::debug!(endpoint = %c.endpoint, error = %e, "ingress: connection to a cluster ended");
                    }
                    false
                }
            });
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls() {
        assert_eq!(
            authority("http://127.0.0.1:8081").unwrap(),
            "127.0.0.1:8081"
        );
        assert_eq!(
            authority("http://shop.example.com").unwrap(),
            "shop.example.com:80"
        );
        assert_eq!(authority("http://[::1]:81/").unwrap(), "[::1]:81");
        assert!(authority("https://a:443")
            .unwrap_err()
            .contains("not an http://"));
        assert!(authority("not a url").is_err());
    }
}
