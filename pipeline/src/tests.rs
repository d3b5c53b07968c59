//! The pipeline's promises: input order, the window bound, per-worker state, first error wins.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn shape(workers: usize, window: usize) -> Shape {
    Shape { workers, window }
}

fn no_state() -> Result<(), String> {
    Ok(())
}

#[test]
fn results_arrive_in_input_order() {
    let mut seen = Vec::new();
    let inputs = (0..500u64).map(Ok::<_, String>);
    ordered_map(
        inputs,
        shape(4, 8),
        no_state,
        |(), n| {
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
        shape(3, 6),
        || Ok(()),
        |(), n| {
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
    assert!(peak.load(Ordering::SeqCst) <= 6, "peak {peak:?}");
}

#[test]
fn each_worker_builds_its_state_once_and_keeps_it() {
    let built = AtomicUsize::new(0);
    let mut per_state_counts = Vec::new();
    ordered_map(
        (0..400u32).map(Ok::<_, ()>),
        shape(3, 6),
        || Ok((built.fetch_add(1, Ordering::SeqCst), 0u32)),
        |(id, uses), n| {
            *uses += 1;
            Ok((*id, *uses, n))
        },
        |(id, uses, _)| {
            per_state_counts.push((id, uses));
            Ok(())
        },
    )
    .unwrap();
    let built = built.load(Ordering::SeqCst);
    assert!((1..=3).contains(&built), "{built} states for 3 workers");
    // Every state's use count went up one by one: each was kept, never rebuilt.
    for id in 0..built {
        let mut uses: Vec<u32> = per_state_counts
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, u)| *u)
            .collect();
        uses.sort_unstable();
        assert_eq!(uses, (1..=uses.len() as u32).collect::<Vec<_>>());
    }
    assert_eq!(per_state_counts.len(), 400);
}

#[test]
fn a_failing_init_fails_the_item_and_stops_the_pipeline() {
    let mut delivered = 0;
    let error = ordered_map(
        (0..100u32).map(Ok),
        shape(2, 4),
        || Err::<(), _>("no zstd context".to_owned()),
        |(), n| Ok(n),
        |_| {
            delivered += 1;
            Ok(())
        },
    )
    .unwrap_err();
    assert_eq!(error, "no zstd context");
    assert_eq!(delivered, 0);
}

#[test]
fn the_first_error_in_order_stops_everything() {
    let mut delivered = Vec::new();
    let error = ordered_map(
        (0..1000u32).map(Ok),
        shape(2, 4),
        no_state,
        |(), n| {
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
    let ok = |(): &mut (), n| Ok(n);
    assert_eq!(
        ordered_map(inputs, shape(2, 4), || Ok(()), ok, |_| Ok(())),
        Err("cut")
    );
    let result = ordered_map(
        (0..100u32).map(Ok),
        shape(2, 4),
        || Ok(()),
        ok,
        |n| {
            if n == 5 {
                Err("disk full")
            } else {
                Ok(())
            }
        },
    );
    assert_eq!(result, Err("disk full"));
}
