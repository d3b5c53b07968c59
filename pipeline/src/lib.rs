//! An ordered parallel map with bounded memory: the engine of both chunk pipelines, the
//! signer's (read → hash and compress → write frames in order) and the updater's (read
//! frames → decompress and hash-check → write at offsets in order).
//!
//! One thread reads inputs, `workers` threads transform them, and the caller's thread
//! receives the results strictly in input order. At most `window` items exist at once
//! anywhere in the pipeline, whatever the input's length: a permit is taken before an item
//! is read and given back once the sink has consumed it, so a slow item cannot make the
//! reorder buffer grow without bound.
//!
//! Each worker owns a state built once by `init` on its first item and kept for every item
//! after (a zstd context, scratch buffers), instead of one per item.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread;

/// How many threads and how many items in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Transforming threads (at least 1).
    pub workers: usize,
    /// Items alive at once anywhere in the pipeline (at least `workers`).
    pub window: usize,
}

/// Transforms `inputs` on `shape.workers` threads and hands the results to `sink` in input
/// order. A worker builds its state with `init` before its first item and passes it to
/// `transform` for each item it takes; an `init` error counts as the error of that item.
/// Stops at the first error in input order, from any stage, and returns it; the threads then
/// wind down on their own as their channels close.
pub fn ordered_map<T, S, O, E>(
    inputs: impl Iterator<Item = Result<T, E>> + Send,
    shape: Shape,
    init: impl Fn() -> Result<S, E> + Sync,
    transform: impl Fn(&mut S, T) -> Result<O, E> + Sync,
    mut sink: impl FnMut(O) -> Result<(), E>,
) -> Result<(), E>
where
    T: Send,
    O: Send,
    E: Send,
{
    let workers = shape.workers.max(1);
    let window = shape.window.max(workers);
    let (permit_tx, permit_rx) = sync_channel::<()>(window);
    for _ in 0..window {
        // Cannot fail: the channel has room for exactly `window` permits.
        let _ = permit_tx.send(());
    }
    let (job_tx, job_rx) = sync_channel::<(u64, T)>(window);
    let job_rx = Mutex::new(job_rx);
    let (result_tx, result_rx) = sync_channel::<(u64, Result<O, E>)>(window);
    let worker = Worker {
        jobs: &job_rx,
        init: &init,
        transform: &transform,
    };

    thread::scope(|scope| {
        let read_result_tx = result_tx.clone();
        scope.spawn(move || read_inputs(inputs, &permit_rx, &job_tx, &read_result_tx));
        for _ in 0..workers {
            let result_tx = result_tx.clone();
            scope.spawn(move || worker.run(&result_tx));
        }
        drop(result_tx);
        // Owned, so both channels close when delivery stops early: that wakes the reader
        // (waiting for a permit) and the workers (waiting to send), and the scope can end.
        deliver_in_order(result_rx, permit_tx, &mut sink)
    })
}

/// Reads inputs, one permit each; a read error travels to the sink as the next result.
fn read_inputs<T, O, E>(
    mut inputs: impl Iterator<Item = Result<T, E>>,
    permits: &Receiver<()>,
    jobs: &SyncSender<(u64, T)>,
    results: &SyncSender<(u64, Result<O, E>)>,
) {
    for seq in 0u64.. {
        // The permit comes first: an item is not even read until there is room for it.
        if permits.recv().is_err() {
            return; // the sink stopped
        }
        let Some(input) = inputs.next() else { return };
        let sent = match input {
            Ok(item) => jobs.send((seq, item)).is_ok(),
            Err(e) => {
                let _ = results.send((seq, Err(e)));
                false
            }
        };
        if !sent {
            return;
        }
    }
}

/// What every worker shares: the job queue and the two functions.
struct Worker<'a, T, I, F> {
    jobs: &'a Mutex<Receiver<(u64, T)>>,
    init: &'a I,
    transform: &'a F,
}

impl<T, I, F> Clone for Worker<'_, T, I, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, I, F> Copy for Worker<'_, T, I, F> {}

impl<T, I, F> Worker<'_, T, I, F> {
    fn run<S, O, E>(self, results: &SyncSender<(u64, Result<O, E>)>)
    where
        I: Fn() -> Result<S, E>,
        F: Fn(&mut S, T) -> Result<O, E>,
    {
        let mut state = None;
        loop {
            // Hold the lock only to take one job, not while transforming it.
            let job = match self.jobs.lock() {
                Ok(receiver) => receiver.recv(),
                Err(_) => return,
            };
            let Ok((seq, item)) = job else { return };
            let result = match &mut state {
                Some(state) => (self.transform)(state, item),
                None => (self.init)().and_then(|s| (self.transform)(state.insert(s), item)),
            };
            if results.send((seq, result)).is_err() {
                return;
            }
        }
    }
}

fn deliver_in_order<O, E>(
    results: Receiver<(u64, Result<O, E>)>,
    permits: SyncSender<()>,
    sink: &mut impl FnMut(O) -> Result<(), E>,
) -> Result<(), E> {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    for (seq, result) in results {
        pending.insert(seq, result);
        while let Some(result) = pending.remove(&next) {
            sink(result?)?;
            next += 1;
            let _ = permits.send(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
