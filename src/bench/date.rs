//! The report's date: seconds since the Unix epoch as a UTC timestamp.

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (`jiff`'s
/// RFC 3339 form of a whole-second timestamp; out of its range, which ends
/// in the year 9999, the epoch itself).
pub fn utc_date(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_date(1_763_889_000), "2025-11-23T09:10:00Z");
    }
}
