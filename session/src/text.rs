//! Text from the cluster shown to the user.

/// `text` without control characters: text from the cluster (annotations, names) may carry
/// terminal escapes (ESC, CSI, BEL, backspace, carriage return) and is never printed raw.
/// Bidirectional overrides go too: they make a terminal show text in another order than it is.
pub fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !is_hostile(*c)).collect()
}

/// [`sanitize`] for a message of several lines: line breaks and tabs are kept.
pub fn sanitize_lines(text: &str) -> String {
    text.chars()
        .filter(|c| matches!(c, '\n' | '\t') || !is_hostile(*c))
        .collect()
}

/// A control character or a bidirectional override.
pub fn is_hostile(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_lines() {
        assert_eq!(sanitize_lines("a\u{1b}[1mb\n\tc\r"), "a[1mb\n\tc");
        assert_eq!(sanitize("a\u{202e}b\nc"), "abc");
    }
}
