//! Numbers as the benchmark reports print them: a fixed count of decimals
//! and thousands separators.

/// Formats `v` with `dec` decimals and thousands separators; a value that
/// rounds to zero has no minus sign.
pub fn num(v: f64, dec: usize) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let s = format!("{:.*}", dec, v.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(a, b)| (a, b));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if v < 0.0 && s.chars().any(|c| c != '0' && c != '.') {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::num;

    #[test]
    fn groups_thousands_and_rounds() {
        assert_eq!(num(0.0, 0), "0");
        assert_eq!(num(999.0, 0), "999");
        assert_eq!(num(1000.0, 0), "1,000");
        assert_eq!(num(1234567.891, 2), "1,234,567.89");
        assert_eq!(num(-1234.5, 1), "-1,234.5");
        // A negative value that rounds to zero has no sign.
        assert_eq!(num(-0.004, 2), "0.00");
        assert_eq!(num(f64::INFINITY, 1), "inf");
    }
}
