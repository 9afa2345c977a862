//! The fault schedule of `simulate`: partitions and crashes over spans of the run.

use std::{fmt, str::FromStr, time::Duration};

/// `START..END`: each end a duration from the start (`18s`) or a share of the run (`30%`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    start: Point,
    end: Point,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Point {
    At(Duration),
    Share(f64),
}

impl Point {
    fn resolve(self, run: Duration) -> Duration {
        match self {
            Point::At(at) => at,
            Point::Share(share) => run.mul_f64(share),
        }
    }
}

impl FromStr for Point {
    type Err = String;

    fn from_str(text: &str) -> Result<Point, String> {
        let text = text.trim();
        match text.strip_suffix('%') {
            Some(percent) => match percent.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(Point::Share(p / 100.0)),
                _ => Err(format!("{text:?}: a percentage from 0% to 100%")),
            },
            None => humantime::parse_duration(text)
                .map(Point::At)
                .map_err(|error| format!("{text:?}: {error}")),
        }
    }
}

impl FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Span, String> {
        let (start, end) = text
            .split_once("..")
            .ok_or_else(|| format!("{text:?}: expected START..END, like 18s..27s or 30%..45%"))?;
        Ok(Span {
            start: start.parse()?,
            end: end.parse()?,
        })
    }
}

impl Span {
    /// `start..end` as fractions of the run.
    pub fn shares(start: f64, end: f64) -> Span {
        Span {
            start: Point::Share(start),
            end: Point::Share(end),
        }
    }
}

/// What happens to the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Validators `0..half` on one side, the rest on the other.
    Partition,
    /// Every partition ends.
    Heal,
    /// A validator crashes (it is stopped; its store stays).
    Crash(usize),
    /// It restarts from its store.
    Restart(usize),
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Partition => write!(f, "partition into two halves"),
            Event::Heal => write!(f, "heal"),
            Event::Crash(v) => write!(f, "crash validator {v}"),
            Event::Restart(v) => write!(f, "restart validator {v} from its store"),
        }
    }
}

/// The events of `partitions` and `crashes` over a run of `run`, in time order. The crashes take
/// `victims` in turn. Fails on a span that ends before it starts or after the run.
pub fn events(
    run: Duration,
    partitions: &[Span],
    crashes: &[Span],
    victims: &[usize],
) -> Result<Vec<(Duration, Event)>, String> {
    if crashes.len() > victims.len() {
        return Err(format!(
            "{} crashes, but only {} validators may crash (validator 0 and the Byzantine ones do not)",
            crashes.len(),
            victims.len()
        ));
    }
    let mut events = Vec::new();
    let mut add = |span: &Span, begin: Event, end: Event| {
        let (from, to) = (span.start.resolve(run), span.end.resolve(run));
        if from > to || to > run {
            return Err(format!(
                "the span {from:?}..{to:?} must start before it ends, within the run ({run:?})"
            ));
        }
        events.push((from, begin));
        events.push((to, end));
        Ok(())
    };
    for span in partitions {
        add(span, Event::Partition, Event::Heal)?;
    }
    for (span, &victim) in crashes.iter().zip(victims) {
        add(span, Event::Crash(victim), Event::Restart(victim))?;
    }
    // Stable: at one instant, a span's end stays after its start.
    events.sort_by_key(|(at, _)| *at);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_as_durations_or_shares_and_order_their_events() {
        let run = Duration::from_secs(60);
        let partition: Span = "30%..45%".parse().expect("shares");
        let crash: Span = "36s..42s".parse().expect("durations");
        let events = events(run, &[partition], &[crash, crash], &[3, 2]).expect("valid");
        let secs = |s| Duration::from_secs(s);
        assert_eq!(
            events,
            vec![
                (secs(18), Event::Partition),
                (secs(27), Event::Heal),
                (secs(36), Event::Crash(3)),
                (secs(36), Event::Crash(2)),
                (secs(42), Event::Restart(3)),
                (secs(42), Event::Restart(2)),
            ]
        );
        for bad in ["30%", "10s..x", "120%..130%", "..5s"] {
            assert!(bad.parse::<Span>().is_err(), "{bad} parsed");
        }
        let late: Span = "50s..70s".parse().expect("parses");
        assert!(
            super::events(run, &[late], &[], &[]).is_err(),
            "past the run"
        );
        let backwards: Span = "20s..10s".parse().expect("parses");
        assert!(super::events(run, &[], &[backwards], &[1]).is_err());
        assert!(super::events(run, &[], &[crash], &[]).is_err(), "no victim");
    }
}
