//! Durations as operators write them: `"3s"`, `"500ms"`, `"1m30s"`.
//!
//! The grammar is one or more `<digits><unit>` groups, units `h`, `m`, `s`, `ms` and
//! `us` (or `µs`), largest first and each at most once. There is no sign, no fraction
//! (`"1.5s"` is written `"1500ms"`), no whitespace, and no bare number: `"30"` could
//! mean seconds or milliseconds, and guessing wrong by a factor of 1000 is exactly the
//! kind of config fault that should stop a start-up. `"0s"` parses; whether zero is
//! acceptable is for validation to decide, per field.

use std::time::Duration;

/// One unit: its spellings, and its length in microseconds (the finest unit).
struct Unit {
    names: &'static [&'static str],
    micros: u64,
}

/// Largest first: the order groups must appear in.
const UNITS: [Unit; 5] = [
    Unit {
        names: &["h"],
        micros: 3_600_000_000,
    },
    Unit {
        names: &["m"],
        micros: 60_000_000,
    },
    Unit {
        names: &["s"],
        micros: 1_000_000,
    },
    Unit {
        names: &["ms"],
        micros: 1_000,
    },
    Unit {
        names: &["us", "µs"],
        micros: 1,
    },
];

const UNIT_LIST: &str = "h, m, s, ms or us";

/// Parses a duration such as `"3s"`, `"250ms"` or `"1h30m"`; see the module docs for
/// the grammar. The error is a sentence naming the input and what to write instead.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration; write a number and a unit, e.g. \"3s\"".to_string());
    }
    if s.starts_with('-') {
        return Err(format!("duration \"{s}\" must not be negative"));
    }
    let mut total = Duration::ZERO;
    // Index into UNITS of the last unit used: the next one must be smaller.
    let mut last_unit: Option<usize> = None;
    let mut rest = s;
    while !rest.is_empty() {
        let digits_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_len);
        let unit_len = after.find(|c: char| !c.is_alphabetic()).unwrap_or(after.len());
        let (unit_name, after) = after.split_at(unit_len);
        if digits.is_empty() {
            return Err(match after.chars().next() {
                Some(c) if unit_name.is_empty() => {
                    format!("unexpected character {c:?} in duration \"{s}\"")
                }
                _ => format!("duration \"{s}\" has a unit without a number"),
            });
        }
        if after.starts_with('.') {
            return Err(format!(
                "fractional durations are not supported (\"{s}\"); use a smaller unit, e.g. \"1500ms\""
            ));
        }
        if unit_name.is_empty() {
            return Err(match after.chars().next() {
                Some(c) => format!("unexpected character {c:?} in duration \"{s}\""),
                None => format!("duration \"{s}\" needs a unit ({UNIT_LIST}), e.g. \"{digits}s\""),
            });
        }
        let Some(unit_index) = UNITS.iter().position(|u| u.names.contains(&unit_name)) else {
            return Err(format!(
                "unknown unit \"{unit_name}\" in duration \"{s}\"; use {UNIT_LIST}"
            ));
        };
        if last_unit.is_some_and(|last| unit_index <= last) {
            return Err(format!(
                "the units in duration \"{s}\" must go from largest to smallest, each at most once"
            ));
        }
        last_unit = Some(unit_index);
        let too_large = || format!("duration \"{s}\" is too large");
        let count: u64 = digits.parse().map_err(|_| too_large())?;
        let micros = count.checked_mul(UNITS[unit_index].micros).ok_or_else(too_large)?;
        total = total.checked_add(Duration::from_micros(micros)).ok_or_else(too_large)?;
        rest = after;
    }
    Ok(total)
}

/// Writes a duration in the same grammar [`parse_duration`] reads, for messages:
/// `90s` becomes `"1m30s"`. Sub-microsecond parts (which the parser cannot produce)
/// are dropped.
pub(crate) fn format_duration(d: Duration) -> String {
    let mut micros = d.as_micros();
    if micros == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for unit in &UNITS {
        let size = u128::from(unit.micros);
        let count = micros / size;
        if count > 0 {
            out.push_str(&format!("{count}{}", unit.names[0]));
            micros -= count * size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_single_and_compound_units() {
        let cases: &[(&str, Duration)] = &[
            ("3s", Duration::from_secs(3)),
            ("0s", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("1h2m3s4ms5us", Duration::from_micros(3_723_004_005)),
            ("90s", Duration::from_secs(90)),
            ("007s", Duration::from_secs(7)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(*expected), "{text}");
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty duration; write a number and a unit, e.g. \"3s\""),
            ("30", "duration \"30\" needs a unit (h, m, s, ms or us), e.g. \"30s\""),
            ("0", "duration \"0\" needs a unit (h, m, s, ms or us), e.g. \"0s\""),
            ("-3s", "duration \"-3s\" must not be negative"),
            ("3x", "unknown unit \"x\" in duration \"3x\"; use h, m, s, ms or us"),
            (
                "3sec",
                "unknown unit \"sec\" in duration \"3sec\"; use h, m, s, ms or us",
            ),
            ("3S", "unknown unit \"S\" in duration \"3S\"; use h, m, s, ms or us"),
            (
                "1.5s",
                "fractional durations are not supported (\"1.5s\"); use a smaller unit, e.g. \"1500ms\"",
            ),
            ("s", "duration \"s\" has a unit without a number"),
            (" 3s", "unexpected character ' ' in duration \" 3s\""),
            ("3s ", "unexpected character ' ' in duration \"3s \""),
            ("3 s", "unexpected character ' ' in duration \"3 s\""),
            ("+3s", "unexpected character '+' in duration \"+3s\""),
            (
                "30s1m",
                "the units in duration \"30s1m\" must go from largest to smallest, each at most once",
            ),
            (
                "1s1s",
                "the units in duration \"1s1s\" must go from largest to smallest, each at most once",
            ),
            (
                "99999999999999999999s",
                "duration \"99999999999999999999s\" is too large",
            ),
            ("5124095576030432h", "duration \"5124095576030432h\" is too large"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Err(expected.to_string()), "{text:?}");
        }
    }

    #[test]
    fn formats_in_the_parsed_grammar() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn formatting_round_trips(micros in 0u64..=u64::MAX / 2) {
            let d = Duration::from_micros(micros);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
