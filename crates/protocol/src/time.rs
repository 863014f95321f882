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

/// The Unix time in milliseconds of a UTC date `YYYY-MM-DD` (its midnight) or
/// instant `YYYY-MM-DDThh:mm:ssZ`; `None` for anything else.
pub fn parse_utc(text: &str) -> Option<u64> {
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time.strip_suffix('Z')?)),
        None => (text, None),
    };
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<i64>().ok())
            .flatten()
    };
    let mut parts = date.split('-');
    let (y, m, d) = (
        number(parts.next()?, 4)?,
        number(parts.next()?, 2)?,
        number(parts.next()?, 2)?,
    );
    if parts.next().is_some() || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let seconds = match time {
        None => 0,
        Some(time) => {
            let mut parts = time.split(':');
            let (h, min, s) = (
                number(parts.next()?, 2)?,
                number(parts.next()?, 2)?,
                number(parts.next()?, 2)?,
            );
            if parts.next().is_some() || h > 23 || min > 59 || s > 59 {
                return None;
            }
            h * 3600 + min * 60 + s
        }
    };
    // Days from 1970-01-01 to the civil date (the inverse of `civil_date`).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + seconds).ok().map(|s| s * 1000)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_reads_back() {
        for ms in [0, 951_782_400_000, 1_764_150_000_000, 4_102_444_799_000] {
            let whole = ms - ms % 1000;
            assert_eq!(parse_utc(&rfc3339(ms)), Some(whole), "{}", rfc3339(ms));
            assert_eq!(parse_utc(&iso_date(ms)), Some(ms - ms % 86_400_000));
        }
        assert_eq!(parse_utc("2024-02-29"), Some(1_709_164_800_000));
        for bad in [
            "",
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "2024-01-01T24:00:00Z",
            "2024-01-01T10:00:00",
            "1969-12-31",
            "x",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(951_782_400_000), "2000-02-29");
        assert_eq!(rfc3339(1_764_150_000_000), "2025-11-26T09:40:00Z");
        assert_eq!(iso_date(4_102_444_800_000), "2100-01-01");
    }
}
