//! Ids per second from one thread (the layout's own limit is 4,096 per millisecond).
//! Run with `cargo run --release -p c10k-store --example ids_per_sec`.

use std::time::Instant;

use c10k_store::{IdGenerator, SystemClock};

fn main() {
    let ids = IdGenerator::new(1, SystemClock).expect("instance 1 is valid");
    let n = 20_000_000u64;
    let start = Instant::now();
    let mut last = 0;
    for _ in 0..n {
        let id = ids.next_id().expect("clock is sane");
        assert!(id > last);
        last = id;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:.2} M ids/s ({n} ids in {secs:.2} s)",
        n as f64 / secs / 1e6
    );
}
