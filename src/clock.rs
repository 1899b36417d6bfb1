//! Wall-clock time as Easel stores and prints it: integer milliseconds since the Unix epoch in the
//! database (portable across SQLite and PostgreSQL), RFC 3339 with milliseconds and `Z` on the wire
//! (`2023-11-09T00:42:22.707Z`, the format of Leonardo's responses and webhook payloads).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// `2023-11-09T00:42:22.707Z`
pub fn rfc3339_ms(ms: Millis) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Parses an RFC 3339 time (`2026-11-28T10:00:00Z`, fractional seconds optional) into milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    Some(time.duration_since(UNIX_EPOCH).ok()?.as_millis() as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_leonardo() {
        assert_eq!(rfc3339_ms(1_699_490_542_707), "2023-11-09T00:42:22.707Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_what_it_prints() {
        assert_eq!(parse_rfc3339("2023-11-09T00:42:22.707Z"), Some(1_699_490_542_707));
        assert_eq!(parse_rfc3339("2023-11-09T00:42:22Z"), Some(1_699_490_542_000));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
