//! The areas a ride may start and end in: the 198 Bangalore wards of
//! `assets/AreaNameEnum.csv`, numbered 1..=198. The file is embedded in the
//! binary and parsed once, on first use.

use std::sync::LazyLock;

/// The embedded area file (header `Area No,Area Name`).
const AREA_CSV: &str = include_str!("../../assets/AreaNameEnum.csv");

/// Area names, index `n - 1` for area `n`.
static AREAS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| parse(AREA_CSV).expect("the embedded area file is well formed"));

/// Parses the area file: a header, then `number,name` lines numbered 1, 2, ...
/// in order. Names hold no commas or quotes, so no CSV quoting is needed.
fn parse(csv: &'static str) -> Result<Vec<&'static str>, String> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        Some(h) if h.trim() == "Area No,Area Name" => {}
        other => return Err(format!("unexpected header {other:?}")),
    }
    let mut names = Vec::new();
    for line in lines {
        let (no, name) = line
            .split_once(',')
            .ok_or_else(|| format!("no comma in {line:?}"))?;
        let no: usize = no
            .trim()
            .parse()
            .map_err(|_| format!("bad number in {line:?}"))?;
        if no != names.len() + 1 {
            return Err(format!("area {no} out of order"));
        }
        names.push(name.trim());
    }
    Ok(names)
}

/// How many areas there are (198).
pub fn count() -> usize {
    AREAS.len()
}

/// The name of area `n`, if it exists.
pub fn name(n: i64) -> Option<&'static str> {
    let index = usize::try_from(n).ok()?.checked_sub(1)?;
    AREAS.get(index).copied()
}

/// Whether `n` names an area.
pub fn is_area(n: i64) -> bool {
    name(n).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_file_has_198_areas() {
        assert_eq!(count(), 198);
        assert_eq!(name(1), Some("Kempegowda Ward"));
        assert_eq!(name(198), Some("Hemmigepura"));
    }

    #[test]
    fn valid_numbers_are_exactly_1_to_198() {
        for (n, ok) in [
            (i64::MIN, false),
            (-1, false),
            (0, false),
            (1, true),
            (100, true),
            (198, true),
            (199, false),
            (i64::MAX, false),
        ] {
            assert_eq!(is_area(n), ok, "{n}");
        }
    }

    #[test]
    fn malformed_files_are_refused() {
        for bad in [
            "",
            "No,Name\n1,a\n",
            "Area No,Area Name\n2,a\n",
            "Area No,Area Name\n1 a\n",
            "Area No,Area Name\nx,a\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse("Area No,Area Name\r\n1,a\r\n2,b\r\n"),
            Ok(vec!["a", "b"])
        );
    }
}
