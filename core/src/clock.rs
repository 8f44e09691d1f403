//! The wall clock, in the milliseconds every record uses.

use crate::model::Millis;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A duration for people: `45s`, `3m05s`, `2h10m`.
pub fn duration_text(ms: Millis) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// A duration written as a number with a unit — `1500ms`, `30s`, `90m`, `4h`, `2d` — or a
/// bare number of seconds, in milliseconds. The error says what is accepted.
pub fn parse_duration(text: &str) -> Result<Millis, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("bad duration {text:?}: use a number with ms, s, m, h or d");
    let factor = match unit.trim() {
        "" | "s" => 1_000.0,
        "ms" => 1.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(bad()),
    };
    match num.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok((n * factor) as Millis),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("1500ms"), Ok(1_500));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("90"), Ok(90_000));
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000));
        assert_eq!(parse_duration("2d"), Ok(172_800_000));
        for bad in ["", "0s", "-1s", "5 weeks", "1y", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
