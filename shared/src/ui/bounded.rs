//! Bounded forwarding from a producer that must never wait (the logs
//! follower) to a consumer that may be slow (one page's connection): at
//! most the channel's capacity is held for the consumer; when it is full,
//! new items are dropped and counted, and the count goes to the consumer
//! (as [`Forwarded::Dropped`], where the gap is) as soon as there is room.

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// How many log lines one page's connection may have waiting.
pub const LOG_LINES: usize = 1024;

/// What the consumer gets: an item, or how many were dropped here.
#[derive(Debug, PartialEq, Eq)]
pub enum Forwarded<T> {
    Item(T),
    Dropped(u64),
}

/// Moves items from `rx` to `tx` until either side closes; never waits on
/// `tx` for an item (it drops it instead), so `rx` never grows because of
/// a slow consumer.
pub async fn forward<T>(mut rx: mpsc::UnboundedReceiver<T>, tx: mpsc::Sender<Forwarded<T>>) {
    let mut dropped: u64 = 0;
    loop {
        tokio::select! {
            item = rx.recv() => {
                let Some(item) = item else { break };
                if dropped > 0 {
                    match tx.try_send(Forwarded::Dropped(dropped)) {
                        Ok(()) => dropped = 0,
                        Err(TrySendError::Full(_)) => {
                            dropped += 1;
                            continue;
                        }
                        Err(TrySendError::Closed(_)) => return,
                    }
                }
                match tx.try_send(Forwarded::Item(item)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => dropped += 1,
                    Err(TrySendError::Closed(_)) => return,
                }
            }
            // The source went quiet after a drop: say so once there is room.
            permit = tx.reserve(), if dropped > 0 => match permit {
                Ok(p) => {
                    p.send(Forwarded::Dropped(dropped));
                    dropped = 0;
                }
                Err(_) => return,
            },
            _ = tx.closed() => return,
        }
    }
    if dropped > 0 {
        let _ = tx.send(Forwarded::Dropped(dropped)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fast producer, a slow consumer: what waits stays within the
    /// capacity, and every item is either delivered or counted as dropped,
    /// in order, with the count where the gap is.
    #[tokio::test]
    async fn a_slow_consumer_gets_a_bounded_stream_and_the_dropped_count() {
        const N: u64 = 20_000;
        const CAP: usize = 64;
        let (utx, urx) = mpsc::unbounded_channel::<u64>();
        let (tx, mut rx) = mpsc::channel(CAP);
        let fwd = tokio::spawn(forward(urx, tx));
        let producer = tokio::spawn(async move {
            for i in 0..N {
                utx.send(i).unwrap();
                // The follower awaits the network between lines.
                tokio::task::yield_now().await;
            }
        });
        let (mut got, mut dropped, mut markers) = (Vec::new(), 0u64, 0);
        let mut max_queued = 0;
        let mut next_expected = 0u64;
        while let Some(f) = rx.recv().await {
            max_queued = max_queued.max(rx.len() + 1);
            match f {
                Forwarded::Item(i) => {
                    assert!(i >= next_expected, "in order: {i} after {next_expected}");
                    next_expected = i + 1;
                    got.push(i);
                }
                Forwarded::Dropped(n) => {
                    assert!(n > 0);
                    dropped += n;
                    markers += 1;
                    // The gap is exactly where the marker is.
                    next_expected += n;
                }
            }
            // Slow: a timer's tick per item.
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        producer.await.unwrap();
        fwd.await.unwrap();
        assert!(max_queued <= CAP, "{max_queued} queued");
        assert!(dropped > 0 && markers > 0, "the consumer was too slow");
        assert_eq!(got.len() as u64 + dropped, N);
        assert_eq!(next_expected, N);
    }

    /// A drop is reported even when nothing follows it.
    #[tokio::test]
    async fn a_drop_is_reported_when_the_source_goes_quiet() {
        let (utx, urx) = mpsc::unbounded_channel::<u32>();
        let (tx, mut rx) = mpsc::channel(2);
        tokio::spawn(forward(urx, tx));
        for i in 0..5 {
            utx.send(i).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(rx.recv().await, Some(Forwarded::Item(0)));
        assert_eq!(rx.recv().await, Some(Forwarded::Item(1)));
        assert_eq!(rx.recv().await, Some(Forwarded::Dropped(3)));
        // The source still open and quiet: nothing more.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), rx.recv())
                .await
                .is_err()
        );
        drop(utx);
        assert_eq!(rx.recv().await, None);
    }

    /// The page closing ends the forwarding (and so the follower's channel).
    #[tokio::test]
    async fn the_consumer_closing_ends_it() {
        let (utx, urx) = mpsc::unbounded_channel::<u32>();
        let (tx, rx) = mpsc::channel(2);
        let fwd = tokio::spawn(forward(urx, tx));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), fwd)
            .await
            .unwrap()
            .unwrap();
        assert!(utx.send(1).is_err(), "the follower sees the end");
    }
}
