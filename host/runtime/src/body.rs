//! Response body adapters: the body type of every response the host sends, a
//! body that keeps a guard alive while it streams, and a body capped at a
//! component's response limit.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// An error type for response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the host sends.
pub type HostBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body that keeps a value alive until the body is dropped.
pub(crate) struct WithGuard<G> {
    pub(crate) inner: HostBody,
    pub(crate) _guard: G,
}

impl<G: Unpin> Body for WithGuard<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that fails once the component writes more than its cap, or,
/// given `failed`, that ends with an error instead of cleanly when the flag is set
/// (a WASIp3 guest failed while writing it: a trap or its deadline).
pub(crate) struct Capped<B> {
    pub(crate) inner: B,
    pub(crate) left: u64,
    pub(crate) component: Arc<str>,
    pub(crate) failed: Option<Arc<AtomicBool>>,
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.left {
                        tracing::warn!(component = %this.component, "response body over limits.max_response_bytes; cut off");
                        return Poll::Ready(Some(Err(format!(
                            "component '{}' wrote more than its limits.max_response_bytes",
                            this.component
                        )
                        .into())));
                    }
                    this.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(format!("{e:?}").into()))),
            Poll::Ready(None) if this.failed.as_ref().is_some_and(|f| f.load(Ordering::Acquire)) => Poll::Ready(Some(
                Err(format!("component '{}' failed while writing its response body", this.component).into()),
            )),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // With a failure flag, never claim the end early: the end is where a failure shows.
        self.failed.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
