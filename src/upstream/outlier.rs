//! Passive checks (outlier ejection) as a pure function of counters and time.
//!
//! `consecutive_failures` failures in a row (connect errors, resets, 5xx
//! responses) eject an endpoint for `ejection_time`; each ejection in a row
//! (no good response in between) doubles it, up to 10 x `ejection_time`. A
//! good response resets both counts. An ejection that would leave more than
//! `max_ejected_percent` of the upstream ejected does not happen; the
//! refusal is reported once per streak.

use std::time::{Duration, Instant};

use crate::config::OutlierConfig;

/// The passive-check state of one endpoint.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outlier {
    /// Failures since the last good response.
    pub consecutive: u32,
    /// Ejections since the last good response.
    pub ejections_in_row: u32,
    /// When the current ejection ends, if ejected.
    pub ejected_until: Option<Instant>,
    /// This streak reached the threshold and its ejection was refused
    /// (said once: each failure after it asks again, silently).
    pub refused: bool,
}

/// What a result asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changes in usability.
    Keep,
    /// Eject for this long.
    Eject(Duration),
    /// The threshold was reached, but ejecting would pass
    /// max_ejected_percent. Once per streak: later failures of the same
    /// streak that are refused too are `Keep`, so that a client whose
    /// requests fail cannot write a warning per request.
    Refused,
}

impl Outlier {
    /// A good response: the streaks end.
    pub fn success(&mut self) {
        self.consecutive = 0;
        self.ejections_in_row = 0;
        self.refused = false;
    }

    /// A failure. `ejected` and `total` count the upstream's endpoints
    /// ejected now and in all, for `max_ejected_percent`.
    pub fn failure(
        &mut self,
        config: &OutlierConfig,
        now: Instant,
        ejected: usize,
        total: usize,
    ) -> Verdict {
        if self.ejected_until.is_some_and(|until| until > now) {
            // Late results of requests sent before the ejection.
            return Verdict::Keep;
        }
        self.consecutive += 1;
        if self.consecutive < config.consecutive_failures {
            return Verdict::Keep;
        }
        if (ejected + 1) * 100 > total * config.max_ejected_percent as usize {
            if std::mem::replace(&mut self.refused, true) {
                return Verdict::Keep;
            }
            return Verdict::Refused;
        }
        self.consecutive = 0;
        self.refused = false;
        self.ejections_in_row += 1;
        let factor = 2u32.saturating_pow(self.ejections_in_row - 1).min(10);
        let duration = config.ejection_time * factor;
        self.ejected_until = Some(now + duration);
        Verdict::Eject(duration)
    }

    /// Ends the ejection when its time has come; true if it ended now.
    pub fn expire(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(until) if until <= now => {
                self.ejected_until = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(failures: u32, percent: u32) -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: failures,
            ejection_time: Duration::from_secs(30),
            max_ejected_percent: percent,
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_and_doubles_in_a_row() {
        let c = config(3, 100);
        let t0 = Instant::now();
        let mut o = Outlier::default();
        assert_eq!(o.failure(&c, t0, 0, 4), Verdict::Keep);
        assert_eq!(o.failure(&c, t0, 0, 4), Verdict::Keep);
        assert_eq!(
            o.failure(&c, t0, 0, 4),
            Verdict::Eject(Duration::from_secs(30))
        );
        // Failures while ejected do not count.
        assert_eq!(o.failure(&c, t0, 1, 4), Verdict::Keep);
        let t1 = t0 + Duration::from_secs(30);
        assert!(o.expire(t1));
        for _ in 0..2 {
            assert_eq!(o.failure(&c, t1, 0, 4), Verdict::Keep);
        }
        assert_eq!(
            o.failure(&c, t1, 0, 4),
            Verdict::Eject(Duration::from_secs(60))
        );
        let mut t = t1 + Duration::from_secs(60);
        let mut durations = Vec::new();
        for _ in 0..4 {
            assert!(o.expire(t));
            let mut verdict = Verdict::Keep;
            for _ in 0..3 {
                verdict = o.failure(&c, t, 0, 4);
            }
            let Verdict::Eject(d) = verdict else {
                panic!("{verdict:?}")
            };
            durations.push(d.as_secs());
            t += d;
        }
        // 120, 240, then capped at 10 x 30 s.
        assert_eq!(durations, [120, 240, 300, 300]);
    }

    #[test]
    fn a_good_response_resets_the_streaks() {
        let c = config(2, 100);
        let t0 = Instant::now();
        let mut o = Outlier::default();
        o.failure(&c, t0, 0, 2);
        o.success();
        assert_eq!(o.failure(&c, t0, 0, 2), Verdict::Keep);
        assert_eq!(
            o.failure(&c, t0, 0, 2),
            Verdict::Eject(Duration::from_secs(30))
        );
        assert!(o.expire(t0 + Duration::from_secs(30)));
        o.success();
        o.failure(&c, t0 + Duration::from_secs(31), 0, 2);
        assert_eq!(
            o.failure(&c, t0 + Duration::from_secs(31), 0, 2),
            Verdict::Eject(Duration::from_secs(30)),
            "back to the base time after serving well"
        );
    }

    #[test]
    fn max_ejected_percent_holds() {
        let c = config(1, 50);
        let t0 = Instant::now();
        let mut o = Outlier::default();
        // 1 of 3 already ejected: a second would be 67% > 50%.
        assert_eq!(o.failure(&c, t0, 1, 3), Verdict::Refused);
        assert_eq!(
            o.failure(&c, t0, 0, 3),
            Verdict::Eject(Duration::from_secs(30))
        );
        let mut o = Outlier::default();
        assert_eq!(
            o.failure(&c, t0, 0, 2),
            Verdict::Eject(Duration::from_secs(30)),
            "1 of 2 is 50%"
        );
        let mut o = Outlier::default();
        assert_eq!(config(1, 0).max_ejected_percent, 0);
        assert_eq!(o.failure(&config(1, 0), t0, 0, 2), Verdict::Refused);
    }

    /// The refusal is said once per streak; each later failure still asks,
    /// and ejects once the upstream has room.
    #[test]
    fn a_refusal_is_said_once_a_streak() {
        let c = config(2, 50);
        let t0 = Instant::now();
        let mut o = Outlier::default();
        assert_eq!(o.failure(&c, t0, 1, 2), Verdict::Keep);
        assert_eq!(o.failure(&c, t0, 1, 2), Verdict::Refused);
        for _ in 0..100 {
            assert_eq!(o.failure(&c, t0, 1, 2), Verdict::Keep);
        }
        // The other endpoint is back: the next failure ejects.
        assert_eq!(
            o.failure(&c, t0, 0, 2),
            Verdict::Eject(Duration::from_secs(30))
        );
        // A new streak after the ejection may be refused and said again.
        let t1 = t0 + Duration::from_secs(30);
        assert!(o.expire(t1));
        o.failure(&c, t1, 1, 2);
        assert_eq!(o.failure(&c, t1, 1, 2), Verdict::Refused);
        // And after a good response.
        o.success();
        o.failure(&c, t1, 1, 2);
        assert_eq!(o.failure(&c, t1, 1, 2), Verdict::Refused);
    }
}
