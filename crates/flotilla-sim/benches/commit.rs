//! Entries committed per second of wall time in a fault-free 3-node simulation: the cost
//! of the whole pipeline (core, runtime model, network model, every-step checks) per
//! committed entry. Clients run a closed loop with no think time.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flotilla_sim::{Profile, SimOptions, run_seed};

fn fault_free_commit(c: &mut Criterion) {
    let opts = SimOptions {
        nodes: Some(3),
        profile: Some(Profile::FaultFree),
        clients: Some(8),
        think_us: (0, 0),
        chaos_ticks: 300,
        linearizability: false,
        ..SimOptions::default()
    };
    // Deterministic: every iteration commits exactly this many entries.
    let committed = run_seed(1, &opts).expect("fault-free run is clean").committed;
    let mut g = c.benchmark_group("sim");
    g.throughput(Throughput::Elements(committed));
    g.sample_size(20);
    g.bench_function("fault_free_3_nodes_entries_committed", |b| {
        b.iter(|| run_seed(1, &opts).expect("clean"))
    });
    g.finish();
}

criterion_group!(benches, fault_free_commit);
criterion_main!(benches);
