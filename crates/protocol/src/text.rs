//! Free text that people send (reasons, notes, names) and text from outside shown on
//! a terminal.
//!
//! Text is data, never control. A reason or a note reaches an approver's terminal and a
//! court's copy of an export package; if it could carry a newline, an escape sequence or
//! a bidirectional override, it could print a fake scope above the real one, hide lines,
//! or reorder what the reader sees. So the gateway refuses such characters in every free
//! text field ([`check_free_text`]), and every party that prints text it did not write
//! escapes them visibly ([`escape`]), in case a package or a gateway was made to carry
//! them anyway.
//!
//! ```
//! use vellum_protocol::text::{check_free_text, escape};
//!
//! assert!(check_free_text("reason", "FOIA 2026-114: emails of the permit office").is_ok());
//! let refused = check_free_text("reason", "ok\n  scope: alice only").unwrap_err();
//! assert_eq!(refused.to_string(), "reason: a line break (U+000A) is not allowed in free text");
//! assert_eq!(escape("ok\x1b[2Kdone"), "ok\\u{1b}[2Kdone");
//! ```

use std::borrow::Cow;
use std::fmt;

/// Why a character may not stand in free text.
fn refused_kind(c: char) -> Option<&'static str> {
    match c {
        '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{85}' => Some("a line break"),
        '\t' => Some("a tab"),
        '\u{1b}' => Some("an escape character"),
        '\0'..='\u{1f}' | '\u{7f}' => Some("a control character"),
        '\u{80}'..='\u{9f}' => Some("a C1 control character"),
        '\u{202a}'..='\u{202e}' => Some("a bidirectional embedding or override"),
        '\u{2066}'..='\u{2069}' => Some("a bidirectional isolate"),
        '\u{200e}' | '\u{200f}' | '\u{61c}' => Some("a bidirectional mark"),
        _ => None,
    }
}

/// Whether `c` is shown escaped by [`escape`]: every character free text refuses.
pub fn is_unsafe(c: char) -> bool {
    refused_kind(c).is_some()
}

/// Free text holding a character it may not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TextError {
    /// The field, as the person sent it (`reason`, `note`, `display_name`, …).
    pub field: String,
    /// The character refused.
    pub found: char,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = refused_kind(self.found).unwrap_or("a character");
        write!(
            f,
            "{}: {kind} (U+{:04X}) is not allowed in free text",
            self.field, self.found as u32
        )
    }
}

impl std::error::Error for TextError {}

/// Checks that `text`, sent as `field`, holds no control character (C0 and C1,
/// newline, tab and ESC included), no line or paragraph separator, and no
/// bidirectional embedding, override, isolate or mark.
pub fn check_free_text(field: &str, text: &str) -> Result<(), TextError> {
    match text.chars().find(|c| is_unsafe(*c)) {
        Some(found) => Err(TextError {
            field: field.to_owned(),
            found,
        }),
        None => Ok(()),
    }
}

/// `text` with every character [`check_free_text`] refuses written visibly instead
/// (`\n`, `\r`, `\t`, or `\u{…}` with the code point in hex), as `git` and `less` show
/// them; other text is unchanged. A backslash is kept as it is: only what could act on
/// a terminal or reorder a line is rewritten.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for text of several lines (an mbox, a CSV file) shown on a terminal:
/// line feeds, and a carriage return just before one, are kept; everything else
/// [`escape`] rewrites is rewritten.
pub fn escape_keeping_lines(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && c != '\r' && is_unsafe(c)) && !has_lone_cr(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let (body, crlf) = match line.strip_suffix('\r') {
            Some(body) => (body, "\r"),
            None => (line, ""),
        };
        out.push_str(&escape(body));
        out.push_str(crlf);
    }
    Cow::Owned(out)
}

fn has_lone_cr(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_character_is_named_and_escaped() {
        let refused = [
            '\0', '\u{7}', '\t', '\n', '\u{b}', '\r', '\u{1b}', '\u{7f}', '\u{80}', '\u{85}', '\u{9b}',
            '\u{9f}', '\u{200e}', '\u{200f}', '\u{61c}', '\u{202a}', '\u{202e}', '\u{2028}', '\u{2029}',
            '\u{2066}', '\u{2069}',
        ];
        for c in refused {
            let text = format!("a{c}b");
            let e = check_free_text("note", &text).unwrap_err();
            assert_eq!(e.found, c);
            assert!(e.to_string().starts_with("note: "), "{e}");
            let shown = escape(&text);
            assert!(!shown.chars().any(is_unsafe), "{shown:?}");
            assert!(shown.starts_with('a') && shown.ends_with('b') && shown.len() > 3);
        }
    }

    #[test]
    fn ordinary_text_in_any_script_passes_unchanged() {
        for text in [
            "FOIA 2026-114 (permit office)",
            "Müller & Söhne: «Prüfung» — 7 Tage",
            "طلب رقم ٧",
            "שלום",
            "調査 №12 ✓",
            "path\\to\\file",
        ] {
            assert!(check_free_text("reason", text).is_ok(), "{text}");
            assert!(matches!(escape(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn lines_survive_and_nothing_else_acts() {
        assert!(matches!(escape_keeping_lines("a,b\r\nc,d\r\n"), Cow::Borrowed(_)));
        assert_eq!(
            escape_keeping_lines("From x\nSubject: \x1b[2Jhi\rover\r\n\u{202e}"),
            "From x\nSubject: \\u{1b}[2Jhi\\rover\r\n\\u{202e}"
        );
    }

    #[test]
    fn escapes_cannot_be_stacked_into_a_new_line() {
        let spoof = "ok\n  scope digest: 00ff\u{1b}[8m hidden \u{202e}txt.exe";
        let shown = escape(spoof);
        assert_eq!(
            shown,
            "ok\\n  scope digest: 00ff\\u{1b}[8m hidden \\u{202e}txt.exe"
        );
        assert_eq!(shown.lines().count(), 1);
    }
}
