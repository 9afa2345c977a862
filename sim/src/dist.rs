//! Latency distributions and the seeded random source that samples them.
//!
//! The samplers are written here rather than taken from `rand_distr` so that a trace depends only on
//! the seed and this file: a dependency update cannot change which delays a seed produces.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// The longest delay any distribution yields; heavier tails are cut here.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// A one-way delay distribution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Latency {
    /// Always `value`.
    Constant {
        #[serde(with = "humantime_serde")]
        value: Duration,
    },
    /// Uniform between `min` and `max`.
    Uniform {
        #[serde(with = "humantime_serde")]
        min: Duration,
        #[serde(with = "humantime_serde")]
        max: Duration,
    },
    /// Log-normal with the given median and shape `sigma` (the usual fit of wide-area RTTs).
    LogNormal {
        #[serde(with = "humantime_serde")]
        median: Duration,
        sigma: f64,
    },
    /// `min` plus an exponential with mean `mean` (queueing delay on top of propagation).
    Exponential {
        #[serde(with = "humantime_serde", default)]
        min: Duration,
        #[serde(with = "humantime_serde")]
        mean: Duration,
    },
    /// Pareto with scale `min` and tail index `shape` (heavy tail: the smaller the shape, the heavier).
    Pareto {
        #[serde(with = "humantime_serde")]
        min: Duration,
        shape: f64,
    },
}

impl Latency {
    /// Checks a distribution as a scenario file may give it: every delay up to an hour, a uniform
    /// range in order, a log-normal shape from 0 to 10, a Pareto shape from 0.01 to 100.
    pub fn check(&self) -> Result<(), comms::config::ConfigError> {
        use comms::config::within;
        let hour = Duration::from_secs(3600);
        match *self {
            Latency::Constant { value } => within("value", value, Duration::ZERO, hour),
            Latency::Uniform { min, max } => {
                within("max", max, Duration::ZERO, hour)?;
                within("min", min, Duration::ZERO, max)
            }
            Latency::LogNormal { median, sigma } => {
                within("median", median, Duration::ZERO, hour)?;
                within("sigma", sigma, 0.0, 10.0)
            }
            Latency::Exponential { min, mean } => {
                within("min", min, Duration::ZERO, hour)?;
                within("mean", mean, Duration::ZERO, hour)
            }
            Latency::Pareto { min, shape } => {
                within("min", min, Duration::ZERO, hour)?;
                within("shape", shape, 0.01, 100.0)
            }
        }
    }

    /// A constant delay.
    pub const fn constant(value: Duration) -> Latency {
        Latency::Constant { value }
    }

    /// One delay in nanoseconds.
    pub fn sample(&self, rng: &mut SimRng) -> u64 {
        let nanos = match *self {
            Latency::Constant { value } => value.as_nanos() as f64,
            Latency::Uniform { min, max } => {
                let (lo, hi) = (min.as_nanos() as f64, max.as_nanos() as f64);
                lo + (hi - lo).max(0.0) * rng.unit()
            }
            Latency::LogNormal { median, sigma } => {
                median.as_nanos() as f64 * (sigma * rng.standard_normal()).exp()
            }
            Latency::Exponential { min, mean } => {
                min.as_nanos() as f64 - mean.as_nanos() as f64 * rng.open_unit().ln()
            }
            Latency::Pareto { min, shape } => {
                min.as_nanos() as f64 / rng.open_unit().powf(1.0 / shape.max(f64::MIN_POSITIVE))
            }
        };
        clamp_nanos(nanos)
    }
}

fn clamp_nanos(nanos: f64) -> u64 {
    if nanos.is_nan() || nanos <= 0.0 {
        0
    } else {
        nanos.min(MAX_DELAY.as_nanos() as f64) as u64
    }
}

/// The simulator's single random source: ChaCha8, whose stream for a seed is fixed by its spec.
#[derive(Clone, Debug)]
pub struct SimRng(ChaCha8Rng);

impl SimRng {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// Uniform in `[0, 1)`, from the top 53 bits of one draw.
    pub fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1]`, safe to take the logarithm of.
    pub fn open_unit(&mut self) -> f64 {
        1.0 - self.unit()
    }

    /// A standard normal draw (Box–Muller, one of the pair).
    pub fn standard_normal(&mut self) -> f64 {
        let (u, v) = (self.open_unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift, which is unbiased enough for `n` far below 2^32.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.0.next_u32() as u64 * n as u64) >> 32) as usize
    }

    /// Uniform in `0..=max_nanos`.
    pub fn up_to(&mut self, max_nanos: u64) -> u64 {
        if max_nanos == 0 {
            0
        } else {
            self.0.next_u64() % (max_nanos + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantiles(latency: &Latency) -> (f64, f64) {
        let mut rng = SimRng::new(1);
        let mut samples: Vec<u64> = (0..20_000).map(|_| latency.sample(&mut rng)).collect();
        samples.sort_unstable();
        let ms = |q: f64| samples[(q * samples.len() as f64) as usize] as f64 / 1e6;
        (ms(0.5), ms(0.99))
    }

    #[test]
    fn distributions_have_their_shape() {
        let ms = Duration::from_millis;
        assert_eq!(quantiles(&Latency::constant(ms(7))), (7.0, 7.0));
        let (p50, p99) = quantiles(&Latency::Uniform {
            min: ms(10),
            max: ms(20),
        });
        assert!(
            (14.5..15.5).contains(&p50) && (19.5..20.0).contains(&p99),
            "{p50} {p99}"
        );
        let (p50, p99) = quantiles(&Latency::LogNormal {
            median: ms(40),
            sigma: 0.5,
        });
        // p99 of a log-normal is median * exp(2.326 sigma) = 128 ms here.
        assert!(
            (38.0..42.0).contains(&p50) && (115.0..140.0).contains(&p99),
            "{p50} {p99}"
        );
        let (p50, p99) = quantiles(&Latency::Exponential {
            min: ms(5),
            mean: ms(10),
        });
        // median 5 + 10 ln 2 = 11.9 ms; p99 5 + 10 ln 100 = 51 ms.
        assert!(
            (11.0..12.8).contains(&p50) && (46.0..56.0).contains(&p99),
            "{p50} {p99}"
        );
        let (p50, p99) = quantiles(&Latency::Pareto {
            min: ms(10),
            shape: 1.5,
        });
        // median 10 * 2^(1/1.5) = 15.9 ms; p99 10 * 100^(1/1.5) = 215 ms.
        assert!(
            (15.0..17.0).contains(&p50) && (180.0..260.0).contains(&p99),
            "{p50} {p99}"
        );
    }

    #[test]
    fn same_seed_same_stream() {
        let latency = Latency::LogNormal {
            median: Duration::from_millis(40),
            sigma: 1.0,
        };
        let draw = |seed| {
            let mut rng = SimRng::new(seed);
            (0..100)
                .map(|_| latency.sample(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
