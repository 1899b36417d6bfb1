//! What happens after an attempt: the one place that decides whether a failure is retried, and
//! when. Pure functions, so the whole policy is unit-tested.

use std::time::{Duration, SystemTime};

use crate::clock::Millis;
use crate::records::{NextStep, TEST_EVENT_TYPE};

/// How an attempt ended, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Failed; try again per the schedule (or after `retry_after`, when the receiver asked).
    Retry {
        retry_after: Option<Duration>,
    },
    /// Failed for good (410 Gone; any failure of a test callback).
    Stop,
}

/// The verdict for an attempt of a delivery of `event_type`: a test callback (`POST
/// /webhook/test`) is sent once, so its failure is final. Nobody is owed it, the caller reads its
/// outcome at once, and a retry hours later would only surprise the receiver.
pub fn verdict_for_event(event_type: &str, verdict: Verdict) -> Verdict {
    match verdict {
        Verdict::Retry { .. } if event_type == TEST_EVENT_TYPE => Verdict::Stop,
        other => other,
    }
}

/// The verdict for an HTTP status. Any 2xx is success; 410 stops; everything else is retried
/// (429 and 503 may carry `Retry-After`).
pub fn verdict_for_status(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Stop,
        429 | 503 => Verdict::Retry { retry_after },
        _ => Verdict::Retry { retry_after: None },
    }
}

/// The policy configured under `[webhook]`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Delay before each attempt; entry 0 is before the first.
    pub schedule: Vec<Duration>,
    pub jitter: f64,
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// The next step after attempt number `schedule_index` (0-based) ended with `verdict` at
    /// `now`. `random` is uniform in 0..1 (injected so tests are exact).
    pub fn next_step(&self, verdict: Verdict, schedule_index: u32, now: Millis, random: f64) -> NextStep {
        match verdict {
            Verdict::Delivered => NextStep::Succeeded,
            Verdict::Stop => NextStep::Failed,
            Verdict::Retry { retry_after } => {
                let next_index = schedule_index + 1;
                let Some(delay) = self.schedule.get(next_index as usize) else {
                    return NextStep::Failed;
                };
                let delay = match retry_after {
                    // The receiver said when it can take the request: then, not earlier, within bounds.
                    Some(asked) => asked.clamp(Duration::from_secs(1), self.max_retry_after),
                    None => self.jittered(*delay, random),
                };
                NextStep::Retry { at: now + delay.as_millis() as Millis, schedule_index: next_index }
            }
        }
    }

    fn jittered(&self, delay: Duration, random: f64) -> Duration {
        let factor = 1.0 + self.jitter * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        delay.mul_f64(factor.max(0.0))
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate_parse(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form HTTP servers send.
fn httpdate_parse(value: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)?
        + 1;
    let rfc3339 = format!("{year}-{month:02}-{:0>2}T{time}Z", day);
    humantime::parse_rfc3339(&rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        let schedule = ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h"]
            .iter()
            .map(|d| humantime::parse_duration(d).unwrap())
            .collect();
        RetryPolicy { schedule, jitter: 0.1, max_retry_after: Duration::from_secs(3600) }
    }

    #[test]
    fn any_2xx_succeeds_410_stops_others_retry() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(verdict_for_status(status, None), Verdict::Delivered, "{status}");
        }
        assert_eq!(verdict_for_status(410, None), Verdict::Stop);
        for status in [301, 302, 400, 401, 404, 500, 502] {
            assert_eq!(verdict_for_status(status, Some(Duration::from_secs(9))), Verdict::Retry { retry_after: None });
        }
        let asked = Some(Duration::from_secs(9));
        assert_eq!(verdict_for_status(429, asked), Verdict::Retry { retry_after: asked });
        assert_eq!(verdict_for_status(503, asked), Verdict::Retry { retry_after: asked });
    }

    #[test]
    fn a_failed_test_callback_is_never_retried() {
        let retry = Verdict::Retry { retry_after: Some(Duration::from_secs(9)) };
        assert_eq!(verdict_for_event(TEST_EVENT_TYPE, retry), Verdict::Stop);
        assert_eq!(verdict_for_event(TEST_EVENT_TYPE, Verdict::Delivered), Verdict::Delivered);
        assert_eq!(verdict_for_event("image_generation.complete", retry), retry);
        assert_eq!(policy().next_step(verdict_for_event(TEST_EVENT_TYPE, retry), 0, 0, 0.5), NextStep::Failed);
    }

    #[test]
    fn the_default_schedule_spans_about_three_days_then_gives_up() {
        let policy = policy();
        let mut now = 0;
        let mut index = 0;
        let mut attempts = 1;
        loop {
            match policy.next_step(Verdict::Retry { retry_after: None }, index, now, 0.5) {
                NextStep::Retry { at, schedule_index } => {
                    assert_eq!(schedule_index, index + 1);
                    now = at;
                    index = schedule_index;
                    attempts += 1;
                }
                NextStep::Failed => break,
                NextStep::Succeeded => unreachable!(),
            }
        }
        assert_eq!(attempts, 10);
        let days = now as f64 / 86_400_000.0;
        assert!((3.0..3.5).contains(&days), "{days} days");
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let policy = policy();
        let at = |random| match policy.next_step(Verdict::Retry { retry_after: None }, 1, 0, random) {
            NextStep::Retry { at, .. } => at,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(0.5), 300_000);
        assert_eq!(at(0.0), 270_000);
        assert_eq!(at(1.0), 330_000);
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let policy = policy();
        let next = |asked| policy.next_step(Verdict::Retry { retry_after: Some(asked) }, 0, 1_000, 0.5);
        assert_eq!(next(Duration::from_secs(30)), NextStep::Retry { at: 31_000, schedule_index: 1 });
        assert_eq!(next(Duration::ZERO), NextStep::Retry { at: 2_000, schedule_index: 1 });
        assert_eq!(next(Duration::from_secs(86_400)), NextStep::Retry { at: 3_601_000, schedule_index: 1 });
        // Still bounded by the schedule's length.
        assert_eq!(
            policy.next_step(Verdict::Retry { retry_after: Some(Duration::from_secs(1)) }, 9, 0, 0.5),
            NextStep::Failed
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = humantime::parse_rfc3339("2015-10-21T07:28:00Z").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
