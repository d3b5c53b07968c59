//! An ordered parallel map with bounded memory: the engine of the install pipeline.
//!
//! One thread reads inputs (chunks from a file, a USB stick or an HTTP body), `workers`
//! threads transform them (decompress + hash check), and the caller's thread receives the
//! results strictly in input order (to write them at their offsets and hash the image as a
//! stream). At most `window` items exist at once anywhere in the pipeline, whatever the
//! image size: a permit is taken before an item is read and given back once the sink has
//! consumed it, so a slow item cannot make the reorder buffer grow without bound.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;

/// Transforms `inputs` with `transform` on `workers` threads and hands the results to `sink`
/// in input order. Stops at the first error from any stage and returns it; the threads
/// then wind down on their own as their channels close.
pub fn ordered_map<T, O, E>(
    inputs: impl Iterator<Item = Result<T, E>> + Send,
    workers: usize,
    window: usize,
    transform: impl Fn(T) -> Result<O, E> + Sync,
    mut sink: impl FnMut(O) -> Result<(), E>,
) -> Result<(), E>
where
    T: Send,
    O: Send,
    E: Send,
{
    let workers = workers.max(1);
    let window = window.max(workers);
    let (permit_tx, permit_rx) = sync_channel::<()>(window);
    for _ in 0..window {
        // Cannot fail: the channel has room for exactly `window` permits.
        let _ = permit_tx.send(());
    }
    let (job_tx, job_rx) = sync_channel::<(u64, T)>(window);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (result_tx, result_rx) = sync_channel::<(u64, Result<O, E>)>(window);

    thread::scope(|scope| {
        let read_result_tx = result_tx.clone();
        scope.spawn(move || read_inputs(inputs, &permit_rx, &job_tx, &read_result_tx));
        for _ in 0..workers {
            let job_rx = Arc::clone(&job_rx);
            let result_tx = result_tx.clone();
            let transform = &transform;
            scope.spawn(move || work(&job_rx, &result_tx, transform));
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
    jobs: &std::sync::mpsc::SyncSender<(u64, T)>,
    results: &std::sync::mpsc::SyncSender<(u64, Result<O, E>)>,
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

fn work<T, O, E>(
    jobs: &Mutex<Receiver<(u64, T)>>,
    results: &std::sync::mpsc::SyncSender<(u64, Result<O, E>)>,
    transform: &(impl Fn(T) -> Result<O, E> + Sync),
) {
    loop {
        // Hold the lock only to take one job, not while transforming it.
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok((seq, item)) = job else { return };
        if results.send((seq, transform(item))).is_err() {
            return;
        }
    }
}

fn deliver_in_order<O, E>(
    results: Receiver<(u64, Result<O, E>)>,
    permits: std::sync::mpsc::SyncSender<()>,
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
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn results_arrive_in_input_order() {
        let mut seen = Vec::new();
        let inputs = (0..500u64).map(Ok::<_, String>);
        ordered_map(
            inputs,
            4,
            8,
            |n| {
                // Later items finish first: the sink must still see input order.
                thread::sleep(Duration::from_micros((500 - n) % 7 * 50));
                Ok(n * 2)
            },
            |n| {
                seen.push(n);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..500u64).map(|n| n * 2).collect::<Vec<_>>());
    }

    #[test]
    fn items_in_flight_never_exceed_the_window() {
        let in_flight = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let inputs = (0..300u32).map(|n| {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            Ok::<_, ()>(n)
        });
        ordered_map(
            inputs,
            3,
            6,
            |n| {
                if n % 50 == 0 {
                    thread::sleep(Duration::from_millis(5)); // a slow head item
                }
                Ok(n)
            },
            |_| {
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            },
        )
        .unwrap();
        assert!(peak.load(Ordering::SeqCst) <= 6, "peak {:?}", peak);
    }

    #[test]
    fn the_first_error_in_order_stops_everything() {
        let mut delivered = Vec::new();
        let error = ordered_map(
            (0..1000u32).map(Ok),
            2,
            4,
            |n| {
                if n == 10 {
                    Err(format!("bad {n}"))
                } else {
                    Ok(n)
                }
            },
            |n| {
                delivered.push(n);
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(error, "bad 10");
        assert_eq!(delivered, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn read_and_sink_errors_propagate() {
        let inputs = (0..100u32).map(|n| if n == 3 { Err("cut") } else { Ok(n) });
        assert_eq!(ordered_map(inputs, 2, 4, Ok, |_| Ok(())), Err("cut"));
        let result = ordered_map((0..100u32).map(Ok), 2, 4, Ok, |n| {
            if n == 5 {
                Err("disk full")
            } else {
                Ok(())
            }
        });
        assert_eq!(result, Err("disk full"));
    }
}
