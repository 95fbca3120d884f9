//! Auto-pause intervals: how they are written (`60`, `90s`, `5m`, `1h`, `0`/`off`/`never`)
//! and the range they must fall in. Plain parsing, shared by the options, the runtime's
//! `BOXLITE_AUTO_PAUSE` default and the front ends.

use std::time::Duration;

/// The longest auto-pause interval: 30 days.
pub const MAX_AUTO_PAUSE_SECS: u32 = 30 * 24 * 3600;

/// An auto-pause interval that is not one, or out of range. `what` names the input (a
/// flag, an option or a variable) so the message points at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutoPauseError {
    #[error(
        "{what} {text:?} is not an interval: give seconds (60), or 90s, 5m, 1h; 0 or off for never"
    )]
    NotAnInterval { what: String, text: String },
    #[error(
        "{what} {text:?} is out of range (0 for never, or at most {MAX_AUTO_PAUSE_SECS} seconds, 30 days)"
    )]
    OutOfRange { what: String, text: String },
}

/// Check an interval in seconds (0 is never).
pub fn check_auto_pause(what: &str, secs: u32) -> Result<u32, AutoPauseError> {
    if secs > MAX_AUTO_PAUSE_SECS {
        return Err(AutoPauseError::OutOfRange {
            what: what.to_string(),
            text: format!("{secs}s"),
        });
    }
    Ok(secs)
}

/// An interval in whole seconds (rounded up), checked.
pub fn auto_pause_secs(d: Duration) -> Result<u32, AutoPauseError> {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let secs = u32::try_from(secs).unwrap_or(u32::MAX);
    check_auto_pause("auto_pause", secs)
}

/// Parse an interval named `what`: seconds, or a number with an `s`, `m` or `h` suffix;
/// `0`, `off` or `never` for never.
pub fn parse_auto_pause(what: &str, text: &str) -> Result<u32, AutoPauseError> {
    let t = text.trim();
    let bad = || AutoPauseError::NotAnInterval {
        what: what.to_string(),
        text: text.to_string(),
    };
    if matches!(t, "off" | "never") {
        return Ok(0);
    }
    let (num, unit) = match t.char_indices().last() {
        Some((i, c @ ('s' | 'm' | 'h'))) => (&t[..i], c),
        _ => (t, 's'),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = n.saturating_mul(match unit {
        'h' => 3600,
        'm' => 60,
        _ => 1,
    });
    match u32::try_from(secs) {
        Ok(secs) if secs <= MAX_AUTO_PAUSE_SECS => Ok(secs),
        _ => Err(AutoPauseError::OutOfRange {
            what: what.to_string(),
            text: text.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_with_units_and_bad_ones_name_the_input() {
        let ok = |t: &str| parse_auto_pause("--auto-pause", t).unwrap();

        assert_eq!(
            [
                ok("60"),
                ok("90s"),
                ok("5m"),
                ok("1h"),
                ok("0"),
                ok("off"),
                ok(" never ")
            ],
            [60, 90, 300, 3600, 0, 0, 0]
        );
        for bad in ["", "m", "-5", "1.5m", "5d", "ten", "99999999999"] {
            let err = parse_auto_pause("--auto-pause", bad).unwrap_err();
            assert!(err.to_string().contains("--auto-pause"), "{bad:?}: {err}");
        }
        assert!(matches!(
            parse_auto_pause("X", "721h"),
            Err(AutoPauseError::OutOfRange { .. })
        ));
        assert_eq!(parse_auto_pause("X", "720h"), Ok(MAX_AUTO_PAUSE_SECS));
        assert_eq!(auto_pause_secs(Duration::from_millis(1500)), Ok(2));
        assert!(auto_pause_secs(Duration::from_secs(u64::MAX)).is_err());
    }
}
