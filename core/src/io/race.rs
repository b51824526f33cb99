//! Deterministic future combinators.
//!
//! `tokio::select!` without `biased;` draws its branch order from a runtime RNG that the
//! simulation does not seed, which breaks replay. These combinators always poll in
//! argument order.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// Which of two raced futures finished first.
#[derive(Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first argument finished (or both were ready; the first wins).
    Left(A),
    /// The second argument finished.
    Right(B),
}

/// Polls `a` then `b` until one completes; the other is dropped.
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}

/// Polls `a` then `b` until both complete.
pub async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let mut out_a = None;
    let mut out_b = None;
    std::future::poll_fn(|cx| {
        if out_a.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                out_a = Some(v);
            }
        }
        if out_b.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                out_b = Some(v);
            }
        }
        match (out_a.take(), out_b.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                out_a = x;
                out_b = y;
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn race_prefers_the_first_when_both_are_ready() {
        assert_eq!(race(async { 1 }, async { 2 }).await, Either::Left(1));
        let r: Either<(), i32> = race(std::future::pending(), async { 2 }).await;
        assert_eq!(r, Either::Right(2));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn join_waits_for_both() {
        let (a, b) = join(async { 1 }, async {
            tokio::task::yield_now().await;
            2
        })
        .await;
        assert_eq!((a, b), (1, 2));
    }
}
