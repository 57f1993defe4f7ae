//! Quantities as people read them in the human (non-JSON) output of every command.

/// Bytes in binary units with one decimal (`512 B`, `1.5 KiB`, `4.8 GiB`): a scan of a small
/// tree must not say "0 MiB hashed", nor one of /usr "4915 MiB".
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `90s`, `5m`, `3h 20m`, `2d 4h`: an age or a wait at a glance (negative counts as 0).
pub fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h {}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_binary_units_with_one_decimal() {
        assert_eq!(
            [bytes(0), bytes(512), bytes(1536), bytes(300_000), bytes(5_079_344_979), bytes(1 << 30)],
            ["0 B", "512 B", "1.5 KiB", "293.0 KiB", "4.7 GiB", "1.0 GiB"]
        );
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn durations_in_the_two_largest_units() {
        assert_eq!(
            [duration(-5), duration(59), duration(61), duration(3_660), duration(90_000)],
            ["0s", "59s", "1m", "1h 1m", "1d 1h"]
        );
    }
}
