//! Where a push goes: the [`Channel`] a sender talks to.
//!
//! The sender ([`send`](super::send)) speaks requests and reads answers in
//! order; it does not care whether the receiver is `sip-ha serve` on the
//! peer at the far end of the SSH link ([`PeerLink`]) or a receiver in this
//! process writing to a local mirror (a `[[sync.target]]`).
//!
//! Requests may be *pipelined*: [`Channel::send`] queues a request (it may
//! sit in a buffer), [`Channel::recv`] flushes what is queued and reads the
//! next answer. Answers come back in the order the requests were sent. A
//! sender keeps only a bounded number of requests unanswered, so the
//! answers (a few bytes each) can never fill the pipe back to it while it
//! is still writing.

use crate::link::protocol::{Request, Response};
use crate::link::PeerLink;
use anyhow::Result;

/// A receiver the sender can talk to. See the [module docs](self).
#[allow(async_fn_in_trait)]
pub trait Channel {
    /// Queue `request`; it may stay buffered until [`recv`](Self::recv).
    async fn send(&mut self, request: &Request) -> Result<()>;
    /// Flush what is queued and read the answer to the oldest unanswered
    /// request.
    async fn recv(&mut self) -> Result<Response>;
    /// Hand what is queued to the receiver now (before local work that
    /// the receiver could overlap with its own).
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// Frame bytes both ways so far (what the summary reports as "on the
    /// wire"; a local mirror counts its frames as if they crossed a link).
    fn wire_bytes(&self) -> u64;

    /// Send one request and wait for its answer.
    async fn request(&mut self, request: &Request) -> Result<Response> {
        self.send(request).await?;
        self.recv().await
    }
}

impl Channel for PeerLink {
    async fn send(&mut self, request: &Request) -> Result<()> {
        PeerLink::send(self, request).await
    }
    async fn recv(&mut self) -> Result<Response> {
        PeerLink::recv(self).await
    }
    async fn flush(&mut self) -> Result<()> {
        PeerLink::flush(self).await
    }
    fn wire_bytes(&self) -> u64 {
        PeerLink::wire_bytes(self)
    }
}
