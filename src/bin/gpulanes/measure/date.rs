//! The report's date: seconds since the Unix epoch as a UTC timestamp.

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch, in the
/// proleptic Gregorian calendar (RFC 3339, whole seconds). Dates after the
/// year 9999 have no four-digit year: they give the epoch itself.
pub fn utc_date(unix: u64) -> String {
    const DAY: u64 = 86_400;
    // 9999-12-31T23:59:59Z.
    const LAST: u64 = 253_402_300_799;
    let unix = if unix > LAST { 0 } else { unix };
    let (days, secs) = (unix / DAY, unix % DAY);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Year, month (1-12) and day (1-31) of a day count from 1970-01-01:
/// the Gregorian calendar repeats every 400 years (146097 days), and a
/// year counted from March puts the leap day last (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days since 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = era * 400 + yoe + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_date(1_763_889_000), "2025-11-23T09:10:00Z");
        assert_eq!(utc_date(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(utc_date(253_402_300_800), "1970-01-01T00:00:00Z");
    }

    /// The same text as jiff's RFC 3339 form, over leap years, century
    /// years and every time of day.
    #[test]
    fn dates_agree_with_jiff() {
        let mut s = 0u64;
        while s <= 253_402_300_799 {
            let want = jiff::Timestamp::from_second(s as i64).unwrap().to_string();
            assert_eq!(utc_date(s), want, "{s}");
            s += 7_777_777 + s % 86_399;
        }
    }
}
