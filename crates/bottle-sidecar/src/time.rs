//! Time stamps for the sidecars' audit lines: RFC 3339 in UTC with
//! milliseconds, computed without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

/// `time` as RFC 3339 UTC with milliseconds, e.g. `2026-05-01T12:00:00.123Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    // Digit by digit into a fixed buffer: `format!` with padding costs as
    // much as the rest of an audit line (this runs once per request).
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, u64::try_from(year).unwrap_or(0).min(9999));
    put(5, 2, u64::from(month));
    put(8, 2, u64::from(day));
    put(11, 2, rest / 3600);
    put(14, 2, rest % 3600 / 60);
    put(17, 2, rest % 60);
    put(20, 3, u64::from(since.subsec_millis()));
    // Only ASCII digits and punctuation were written.
    String::from_utf8_lossy(&out).into_owned()
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_dates() {
        let check = |secs: u64, millis: u64, expect: &str| {
            let time = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
            assert_eq!(rfc3339(time), expect);
        };
        check(0, 0, "1970-01-01T00:00:00.000Z");
        check(951_782_400, 5, "2000-02-29T00:00:00.005Z");
        check(1_709_251_199, 999, "2024-02-29T23:59:59.999Z");
        check(1_735_689_599, 999, "2024-12-31T23:59:59.999Z");
        check(4_102_444_800, 0, "2100-01-01T00:00:00.000Z");
        check(4_107_542_400, 0, "2100-03-01T00:00:00.000Z");
    }
}
