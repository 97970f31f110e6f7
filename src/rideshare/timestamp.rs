//! RideShare timestamps: `DD-MM-YYYY:SS-MM-HH` (strptime
//! `%d-%m-%Y:%S-%M-%H`; seconds come first and hours last), every field
//! zero-padded to exactly 2/2/4/2/2/2 digits, always UTC.
//!
//! They are stored as seconds since the Unix epoch so that the database can
//! order and compare them as integers. The calendar arithmetic is the
//! proleptic Gregorian one of Howard Hinnant's `days_from_civil`, written out
//! here rather than pulled in from a date crate.

use std::fmt;

/// The first and last years a timestamp may name, as Python's `datetime`
/// (which the original service used) allows.
pub const MIN_YEAR: i64 = 1;
pub const MAX_YEAR: i64 = 9999;

/// Why a string is not a timestamp; the message is fit for a 400 body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimestampError(String);

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimestampError {}

const SHAPE: &str = "DD-MM-YYYY:SS-MM-HH";

/// A civil date and time of day, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

/// Parses `DD-MM-YYYY:SS-MM-HH` into Unix seconds.
pub fn parse(s: &str) -> Result<i64, TimestampError> {
    let dt = split(s).ok_or_else(|| {
        TimestampError(format!("timestamp {:?} does not match {SHAPE}", shorten(s)))
    })?;
    check(&dt)?;
    let days = days_from_civil(dt.year, dt.month, dt.day);
    Ok(days * 86_400 + i64::from(dt.hour * 3600 + dt.minute * 60 + dt.second))
}

/// Formats Unix seconds as `DD-MM-YYYY:SS-MM-HH`; `None` outside the years
/// [`MIN_YEAR`]..=[`MAX_YEAR`].
pub fn format(secs: i64) -> Option<String> {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return None;
    }
    let (hour, minute, second) = (tod / 3600, tod / 60 % 60, tod % 60);
    Some(format!(
        "{day:02}-{month:02}-{year:04}:{second:02}-{minute:02}-{hour:02}"
    ))
}

/// Splits the string by shape alone: digits and separators at fixed byte
/// positions. Any non-ASCII byte fails the digit or separator test, so no
/// index ever falls inside a multi-byte character.
fn split(s: &str) -> Option<DateTime> {
    let b = s.as_bytes();
    if b.len() != SHAPE.len() {
        return None;
    }
    let seps = [(2, b'-'), (5, b'-'), (10, b':'), (13, b'-'), (16, b'-')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    Some(DateTime {
        day: num(0, 2)?,
        month: num(3, 5)?,
        year: i64::from(num(6, 10)?),
        second: num(11, 13)?,
        minute: num(14, 16)?,
        hour: num(17, 19)?,
    })
}

fn check(dt: &DateTime) -> Result<(), TimestampError> {
    let bad = |msg: String| Err(TimestampError(msg));
    if !(MIN_YEAR..=MAX_YEAR).contains(&dt.year) {
        return bad(format!("year {} is out of range", dt.year));
    }
    if !(1..=12).contains(&dt.month) {
        return bad(format!("month {} does not exist", dt.month));
    }
    if dt.day == 0 || dt.day > days_in_month(dt.year, dt.month) {
        return bad(format!(
            "day {:02}-{:02}-{:04} does not exist",
            dt.day, dt.month, dt.year
        ));
    }
    if dt.hour > 23 || dt.minute > 59 || dt.second > 59 {
        return bad(format!(
            "time {:02}:{:02}:{:02} does not exist",
            dt.hour, dt.minute, dt.second
        ));
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Years start in March, so that the leap day is the last of its year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = i64::from((month + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_parse_and_format() {
        for (text, secs) in [
            ("01-01-1970:00-00-00", 0),
            ("01-01-1970:01-00-00", 1),
            ("01-01-1970:00-01-00", 60),
            ("01-01-1970:00-00-01", 3600),
            ("31-12-1969:59-59-23", -1),
            ("26-01-2020:00-00-10", 1_580_032_800),
            ("29-02-2000:00-00-00", 951_782_400),
            ("29-02-2024:30-15-12", 1_709_208_930),
            ("09-09-2001:40-46-01", 1_000_000_000),
            ("01-01-0001:00-00-00", -62_135_596_800),
            ("31-12-9999:59-59-23", 253_402_300_799),
        ] {
            assert_eq!(parse(text), Ok(secs), "{text}");
            assert_eq!(format(secs).as_deref(), Some(text), "{secs}");
        }
    }

    #[test]
    fn days_in_month_follow_the_gregorian_calendar() {
        for (text, ok) in [
            ("31-01-2021:00-00-00", true),
            ("29-02-2020:00-00-00", true),
            ("29-02-2021:00-00-00", false),
            ("29-02-1900:00-00-00", false),
            ("29-02-2000:00-00-00", true),
            ("30-02-2000:00-00-00", false),
            ("31-02-2020:00-00-00", false),
            ("31-03-2021:00-00-00", true),
            ("31-04-2021:00-00-00", false),
            ("30-04-2021:00-00-00", true),
            ("31-06-2021:00-00-00", false),
            ("31-09-2021:00-00-00", false),
            ("31-11-2021:00-00-00", false),
            ("31-12-2021:00-00-00", true),
            ("32-01-2021:00-00-00", false),
            ("00-01-2021:00-00-00", false),
            ("01-00-2021:00-00-00", false),
            ("01-13-2021:00-00-00", false),
            ("01-01-0000:00-00-00", false),
        ] {
            assert_eq!(parse(text).is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn times_of_day_are_range_checked() {
        for (text, ok) in [
            ("01-01-2021:59-59-23", true),
            ("01-01-2021:00-00-24", false),
            ("01-01-2021:00-60-00", false),
            ("01-01-2021:60-00-00", false),
            ("01-01-2021:99-99-99", false),
        ] {
            assert_eq!(parse(text).is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn anything_not_exactly_the_shape_is_refused() {
        for text in [
            "",
            "1-01-2021:00-00-00",
            "01-1-2021:00-00-00",
            "01-01-21:00-00-00",
            "01-01-02021:00-00-00",
            "01-01-2021:0-00-00",
            "01-01-2021:00-00-0",
            "01-01-2021:00-00-000",
            "01-01-2021 00-00-00",
            "01/01/2021:00-00-00",
            "01-01-2021:00:00:00",
            "2021-01-01T00:00:00",
            "+1-01-2021:00-00-00",
            "-1-01-2021:00-00-00",
            " 01-01-2021:00-00-00",
            "01-01-2021:00-00-00 ",
            "0a-01-2021:00-00-00",
            "01-01-2021:00-00-0\u{0661}",
            "\u{0660}\u{0661}-01-2021:00-00",
            "é1-01-2021:00-00-00",
            "01-01-2021:00-00-é",
            "ééééééééééééééééééé",
            "💥💥💥💥💥",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = parse("31-02-2020:00-00-00").unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = parse("garbage").unwrap_err().to_string();
        assert!(e.contains(SHAPE), "{e}");
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        // 2000-03-01 .. 2400-03-01 covers every leap-year rule.
        let start = days_from_civil(2000, 3, 1);
        let mut expect = (2000, 3, 1);
        for days in start..start + 146_097 {
            assert_eq!(civil_from_days(days), expect);
            assert_eq!(days_from_civil(expect.0, expect.1, expect.2), days);
            expect = next_day(expect);
        }
    }

    fn next_day((y, m, d): (i64, u32, u32)) -> (i64, u32, u32) {
        if d < days_in_month(y, m) {
            (y, m, d + 1)
        } else if m < 12 {
            (y, m + 1, 1)
        } else {
            (y + 1, 1, 1)
        }
    }

    #[test]
    fn format_refuses_years_out_of_range_and_never_panics() {
        assert_eq!(format(-62_135_596_801), None);
        assert_eq!(format(253_402_300_800), None);
        assert_eq!(format(i64::MIN), None);
        assert_eq!(format(i64::MAX), None);
    }
}
