//! Value parsers for settings: each error names the environment variable, so that a bad
//! value stops the start with a message that says which setting to fix.

use std::time::Duration;

/// A whole number in `min..=max`.
pub fn number(
    var: &'static str,
    min: u64,
    max: u64,
    unit: &'static str,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |raw: &str| match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{var} must be a whole number of {unit} from {min} to {max}, got {raw:?}"
        )),
    }
}

/// Milliseconds in `min..=max`.
pub fn millis(
    var: &'static str,
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    let parse = number(var, min, max, "milliseconds");
    move |raw: &str| parse(raw).map(Duration::from_millis)
}

/// Seconds in `min..=max`.
pub fn secs(
    var: &'static str,
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    let parse = number(var, min, max, "seconds");
    move |raw: &str| parse(raw).map(Duration::from_secs)
}

/// A `host:port` address.
pub fn address(
    var: &'static str,
) -> impl Fn(&str) -> Result<std::net::SocketAddr, String> + Clone + Send + Sync {
    move |raw: &str| {
        raw.trim()
            .parse()
            .map_err(|e| format!("{var} must be host:port, got {raw:?}: {e}"))
    }
}

/// Any text accepted by `check` (which says what is wrong).
pub fn text<T: Clone + Send + Sync + 'static>(
    var: &'static str,
    check: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |raw: &str| check(raw.trim()).map_err(|e| format!("{var}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable() {
        let e = millis("CORRAL_X_MS", 1, 10)("11").expect_err("out of range");
        assert!(e.starts_with("CORRAL_X_MS must be"), "{e}");
        assert_eq!(
            millis("CORRAL_X_MS", 1, 10)(" 5 "),
            Ok(Duration::from_millis(5))
        );
        assert!(address("CORRAL_A")("nope")
            .expect_err("bad")
            .contains("CORRAL_A"));
    }
}
