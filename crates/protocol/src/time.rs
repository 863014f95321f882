//! Calendar arithmetic on Unix time, UTC only (for day tokens and file comments).
//! Days from civil dates follow the well-known proleptic-Gregorian algorithm.

/// The UTC calendar date `(year, month, day)` of a Unix time in milliseconds.
pub fn civil_date(unix_ms: u64) -> (i64, u32, u32) {
    let days = (unix_ms / 86_400_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD` of a Unix time in milliseconds, UTC.
pub fn iso_date(unix_ms: u64) -> String {
    let (y, m, d) = civil_date(unix_ms);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDThh:mm:ssZ` of a Unix time in milliseconds, UTC.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        iso_date(unix_ms),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(951_782_400_000), "2000-02-29");
        assert_eq!(rfc3339(1_764_150_000_000), "2025-11-26T09:40:00Z");
        assert_eq!(iso_date(4_102_444_800_000), "2100-01-01");
    }
}
