//! What the bench binaries share.

/// The value of environment variable `name`, or `default` when it is unset; a
/// value that does not parse stops the bench with the reason.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}
