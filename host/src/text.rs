//! Text that came from elsewhere (a plugin's refusal, an error chain) bounded before
//! it goes into an event, a log line or an API answer.

/// What plugin messages are cut to: an event note holds at most 1 KiB as well.
pub const MAX_MESSAGE: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, ending with `…` when
/// it was cut.
pub fn bounded(mut text: String, max: usize) -> String {
    const ELLIPSIS: &str = "…";
    if text.len() <= max {
        return text;
    }
    // Too small for the ellipsis: the text alone, cut.
    let room = if max >= ELLIPSIS.len() {
        max - ELLIPSIS.len()
    } else {
        max
    };
    let mut cut = room;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    if room < max {
        text.push_str(ELLIPSIS);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_char_boundary_with_an_ellipsis() {
        assert_eq!(bounded("short".into(), 10), "short");
        assert_eq!(bounded("0123456789".into(), 10), "0123456789");
        let cut = bounded("0123456789ab".into(), 10);
        assert_eq!(cut, "0123456…");
        assert_eq!(cut.len(), 10);
        // Multi-byte characters are never split.
        let wide = "é".repeat(2000);
        let cut = bounded(wide, MAX_MESSAGE);
        assert!(
            cut.len() <= MAX_MESSAGE && cut.ends_with('…'),
            "{}",
            cut.len()
        );
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
        assert_eq!(bounded("abcdef".into(), 2), "ab");
    }
}
