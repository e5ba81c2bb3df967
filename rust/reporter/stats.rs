//! The reporter's counters: atomics, so `stats()` never waits for a send
//! in progress (which holds the reporter's state for up to `timeout_s`).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! stats {
    ($($variant:ident => $name:literal,)*) => {
        #[derive(Clone, Copy)]
        pub enum Stat { $($variant,)* }

        impl Stat {
            pub const ALL: &'static [Stat] = &[$(Stat::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Stat::$variant => $name,)* }
            }
        }
    };
}

// The keys `NodeReporter.stats()` has always had come first, in their order.
stats! {
    BatchesSent => "batches_sent",
    SamplesSent => "samples_sent",
    LogEntriesSent => "log_entries_sent",
    SendFailures => "send_failures",
    BatchesRejected => "batches_rejected",
    BatchesUnconfirmed => "batches_unconfirmed",
    BatchesDropped => "batches_dropped",
    SamplesDropped => "samples_dropped",
    LogEntriesDropped => "log_entries_dropped",
    InheritedSamplesDiscarded => "inherited_samples_discarded",
    PendingBatches => "pending_batches",
    PendingBytes => "pending_bytes",
    PendingSamples => "pending_samples",
    InheritedLogEntriesDiscarded => "inherited_log_entries_discarded",
    ConnectionsOpened => "connections_opened",
}

#[derive(Default)]
pub struct Stats {
    values: [AtomicU64; Stat::ALL.len()],
}

impl Stats {
    pub fn add(&self, stat: Stat, n: u64) {
        self.values[stat as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// For the gauges (pending_*), written under the reporter's state lock.
    pub fn set(&self, stat: Stat, n: u64) {
        self.values[stat as usize].store(n, Ordering::Relaxed);
    }

    pub fn get(&self, stat: Stat) -> u64 {
        self.values[stat as usize].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Stat::ALL.iter().map(|&s| (s.name(), self.get(s))).collect()
    }
}
