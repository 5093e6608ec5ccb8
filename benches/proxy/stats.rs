//! Latency samples and the few statistics the report prints.
//!
//! Owns: sorting samples, percentiles, formatting durations in µs/ms.
//! Uses: nothing else of the bench.
//! Must not: decide anything from a figure (no thresholds).

use std::time::Duration;

/// Sorted per-call latencies, in nanoseconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples {
    nanos: Vec<u64>,
}

impl Samples {
    /// Sorts `durations` once so percentiles are lookups.
    pub(crate) fn new(durations: impl IntoIterator<Item = Duration>) -> Self {
        let mut nanos: Vec<u64> =
            durations.into_iter().map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).collect();
        nanos.sort_unstable();
        Self { nanos }
    }

    pub(crate) fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Nearest-rank percentile `p` in 0..=100; zero when there are no samples.
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        if self.nanos.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.nanos.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.nanos.len()) - 1;
        Duration::from_nanos(self.nanos[index])
    }

    pub(crate) fn p50(&self) -> Duration {
        self.percentile(50.0)
    }

    pub(crate) fn p99(&self) -> Duration {
        self.percentile(99.0)
    }

    pub(crate) fn max(&self) -> Duration {
        self.nanos.last().copied().map(Duration::from_nanos).unwrap_or_default()
    }
}

/// Microseconds with one decimal, e.g. `93.4`.
pub(crate) fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// Milliseconds with two decimals, e.g. `1.27`.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Signed difference `a - b` in µs, e.g. `+41.0`.
pub(crate) fn added_us(a: Duration, b: Duration) -> String {
    format!("{:+.1}", (a.as_secs_f64() - b.as_secs_f64()) * 1e6)
}

/// `a / b` as `2.31×`.
pub(crate) fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "–".to_owned();
    }
    format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64())
}
