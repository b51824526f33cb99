//! Byte sizes as operators write them: `4096`, `"512B"`, `"16KiB"`, `"1MiB"`.
//!
//! Only binary multiples are accepted, spelled exactly `B`, `KiB`, `MiB` and `GiB`.
//! `"16KB"` and `"16k"` are rejected rather than guessed: half of the tools an operator
//! knows read them as 1000 and the other half as 1024. No sign, no fraction, no space.

/// Suffixes and their multipliers, largest first so that `format_size` picks the
/// biggest exact one.
const UNITS: [(&str, usize); 4] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];

/// Parses a byte size such as `"16KiB"`, `"512B"` or `"4096"` (a bare number is bytes).
pub fn parse_size(s: &str) -> Result<usize, String> {
    if s.is_empty() {
        return Err("empty size; write bytes or a number and a unit, e.g. \"16KiB\"".to_string());
    }
    if s.starts_with('-') {
        return Err(format!("size \"{s}\" must not be negative"));
    }
    let digits_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_len);
    if digits.is_empty() {
        return Err(format!("size \"{s}\" must start with a number, e.g. \"16KiB\""));
    }
    if unit.starts_with('.') {
        return Err(format!(
            "fractional sizes are not supported (\"{s}\"); use a smaller unit, e.g. \"1536KiB\""
        ));
    }
    let multiplier = if unit.is_empty() {
        1
    } else {
        match UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, multiplier)) => *multiplier,
            None => {
                return Err(format!(
                    "unknown unit \"{unit}\" in size \"{s}\"; use B, KiB, MiB or GiB"
                ))
            }
        }
    };
    let too_large = || format!("size \"{s}\" is too large");
    let count: usize = digits.parse().map_err(|_| too_large())?;
    count.checked_mul(multiplier).ok_or_else(too_large)
}

/// Writes a size with the largest unit that divides it exactly, for messages.
pub(crate) fn format_size(bytes: usize) -> String {
    for (name, multiplier) in UNITS {
        if bytes >= multiplier && bytes.is_multiple_of(multiplier) {
            return format!("{}{name}", bytes / multiplier);
        }
    }
    "0B".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_bytes_and_binary_units() {
        let cases: &[(&str, usize)] = &[
            ("4096", 4096),
            ("0", 0),
            ("512B", 512),
            ("16KiB", 16 * 1024),
            ("1MiB", 1 << 20),
            ("2GiB", 2 << 30),
            ("0016KiB", 16 * 1024),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_size(text), Ok(*expected), "{text}");
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty size; write bytes or a number and a unit, e.g. \"16KiB\""),
            ("-1", "size \"-1\" must not be negative"),
            ("KiB", "size \"KiB\" must start with a number, e.g. \"16KiB\""),
            (" 16KiB", "size \" 16KiB\" must start with a number, e.g. \"16KiB\""),
            ("16KB", "unknown unit \"KB\" in size \"16KB\"; use B, KiB, MiB or GiB"),
            ("16k", "unknown unit \"k\" in size \"16k\"; use B, KiB, MiB or GiB"),
            (
                "16kib",
                "unknown unit \"kib\" in size \"16kib\"; use B, KiB, MiB or GiB",
            ),
            (
                "16 KiB",
                "unknown unit \" KiB\" in size \"16 KiB\"; use B, KiB, MiB or GiB",
            ),
            (
                "1.5MiB",
                "fractional sizes are not supported (\"1.5MiB\"); use a smaller unit, e.g. \"1536KiB\"",
            ),
            ("99999999999999999999", "size \"99999999999999999999\" is too large"),
            ("17179869184GiB", "size \"17179869184GiB\" is too large"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_size(text), Err(expected.to_string()), "{text:?}");
        }
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(16 * 1024), "16KiB");
        assert_eq!(format_size(16 << 20), "16MiB");
        assert_eq!(format_size(1536 * 1024), "1536KiB");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_size(&s);
        }

        #[test]
        fn formatting_round_trips(bytes in any::<u32>()) {
            let bytes = bytes as usize;
            prop_assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
    }
}
