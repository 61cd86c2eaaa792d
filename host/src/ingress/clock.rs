//! A client connection's timeouts, kept by one timer per connection instead of one
//! or two per request.
//!
//! Two limits apply to a client connection: the time from going idle (opened, or
//! its last answer sent to the end) to the next request's whole head
//! ([`super::IngressConfig::header_timeout`]: also what bounds an idle keep-alive
//! connection), and the time a cluster has to answer a request
//! ([`super::IngressConfig::response_timeout`]). A timer per request (or two) is
//! registered and removed in the runtime's timer wheel on every request, which
//! costs about a tenth of the proxy's CPU per request. Here each connection has one
//! [`Watchdog`] with one timer: a request only writes down its deadline, and the
//! timer is moved only when something is due earlier than it is set for. Set too
//! early, it fires, finds nothing due, and is set again: about once per header
//! timeout on a busy connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::ProxyBody;

/// When a client connection's limits run out.
pub(super) struct Clock {
    state: Mutex<State>,
    header_timeout: Duration,
}

struct State {
    /// Requests in flight, the sending of their answers included.
    busy: u32,
    /// When the connection last had no request in flight.
    idle_since: Instant,
    /// When the request waiting for a cluster's answer gives up.
    deadline: Option<Instant>,
    /// That request's time ran out; it wakes with `waiter`.
    expired: bool,
    waiter: Option<Waker>,
    /// The watchdog, and when its timer fires.
    watchdog: Option<Waker>,
    alarm: Option<Instant>,
}

impl Clock {
    pub(super) fn new(header_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                busy: 0,
                idle_since: Instant::now(),
                deadline: None,
                expired: false,
                waiter: None,
                watchdog: None,
                alarm: None,
            }),
            header_timeout,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Only the connection's own task takes it: never contended.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request came in: the connection is busy until the guard, which the
    /// answer's body carries, is dropped.
    pub(super) fn busy(self: &Arc<Self>) -> Busy {
        self.lock().busy += 1;
        Busy(self.clone())
    }

    /// Runs `answer` until it is ready or `deadline` passes (then `None`).
    pub(super) async fn within<F: Future>(
        &self,
        deadline: Instant,
        answer: F,
    ) -> Option<F::Output> {
        {
            let mut state = self.lock();
            state.deadline = Some(deadline);
            state.expired = false;
            // The watchdog is set for later: it must look again sooner.
            if state.alarm.is_none_or(|at| deadline < at) {
                if let Some(w) = &state.watchdog {
                    w.wake_by_ref();
                }
            }
        }
        let mut answer = std::pin::pin!(answer);
        let outcome = std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = answer.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            let mut state = self.lock();
            if state.expired {
                return Poll::Ready(None);
            }
            if !state
                .waiter
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.waiter = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
        let mut state = self.lock();
        state.deadline = None;
        state.expired = false;
        outcome
    }

    /// When something falls due, as things stand.
    fn pending(&self, state: &State) -> Option<Instant> {
        if state.busy == 0 {
            Some(state.idle_since + self.header_timeout)
        } else if state.expired {
            None
        } else {
            state.deadline
        }
    }

    /// What is due next once the alarm rang at `now`, or `Err` when the
    /// connection has been idle too long.
    fn due(&self, state: &mut State, now: Instant) -> Result<Option<Instant>, ()> {
        if state.busy == 0 {
            let until = state.idle_since + self.header_timeout;
            if until <= now {
                return Err(());
            }
            return Ok(Some(until));
        }
        match state.deadline {
            Some(at) if at <= now && !state.expired => {
                state.expired = true;
                if let Some(w) = state.waiter.take() {
                    w.wake();
                }
                Ok(None)
            }
            Some(at) if !state.expired => Ok(Some(at)),
            // Busy sending an answer, or waiting to be told a request's time ran
            // out: nothing is due until the connection is idle again.
            _ => Ok(None),
        }
    }
}

/// The connection is busy while this lives.
pub(super) struct Busy(Arc<Clock>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.busy = state.busy.saturating_sub(1);
        if state.busy == 0 {
            state.idle_since = Instant::now();
            // The watchdog is asleep with nothing due, or set for later than the
            // idle limit: it must look again.
            let limit = state.idle_since + self.0.header_timeout;
            if state.alarm.is_none_or(|at| limit < at) {
                if let Some(w) = &state.watchdog {
                    w.wake_by_ref();
                }
            }
        }
    }
}

/// An answer's body that keeps its connection busy until it is sent (or dropped).
pub(super) struct Tracked {
    body: ProxyBody,
    _busy: Busy,
}

impl Tracked {
    pub(super) fn new(body: ProxyBody, busy: Busy) -> Self {
        Self { body, _busy: busy }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Keeps a client connection's limits; finishes when the connection has been idle
/// longer than the header timeout (the connection is then closed).
pub(super) struct Watchdog {
    clock: Arc<Clock>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Watchdog {
    pub(super) fn new(clock: Arc<Clock>) -> Self {
        let first = clock.lock().idle_since + clock.header_timeout;
        clock.lock().alarm = Some(first);
        Self {
            clock,
            timer: Box::pin(tokio::time::sleep_until(first.into())),
        }
    }
}

impl Future for Watchdog {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut state = this.clock.lock();
        if !state
            .watchdog
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.watchdog = Some(cx.waker().clone());
        }
        loop {
            let next = match state.alarm {
                Some(_) if this.timer.as_mut().poll(cx).is_ready() => {
                    match this.clock.due(&mut state, Instant::now()) {
                        Ok(due) => due,
                        Err(()) => return Poll::Ready(()),
                    }
                }
                // Set, and not yet due: only something due earlier moves it.
                Some(alarm) => match this.clock.pending(&state) {
                    Some(at) if at < alarm => Some(at),
                    _ => return Poll::Pending,
                },
                None => this.clock.pending(&state),
            };
            state.alarm = next;
            match next {
                // Polled at the top of the loop, which registers the new time.
                Some(at) => this.timer.as_mut().reset(at.into()),
                // Nothing due: a request or the connection going idle wakes it.
                None => return Poll::Pending,
            }
        }
    }
}
