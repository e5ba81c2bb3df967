//! Text from Python, and cutting text to a byte budget: shared by the
//! function log path and the tracer so both treat odd strings alike.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyString;
use std::ops::Deref;

/// A Python string's UTF-8: borrowed from Python when it is valid, else
/// (lone surrogates) re-encoded with `backslashreplace`, so a surrogate
/// U+D800 is kept as the six characters `\ud800`: altered, but nothing is
/// lost, and the caller counts it.
pub enum Text {
    Borrowed(PyBackedStr),
    Escaped(String),
}

impl Text {
    pub fn from_py(s: &Bound<'_, PyString>) -> PyResult<Self> {
        if let Ok(b) = s.extract::<PyBackedStr>() {
            return Ok(Text::Borrowed(b));
        }
        let bytes = s.call_method1("encode", ("utf-8", "backslashreplace"))?;
        let escaped = String::from_utf8_lossy(bytes.extract::<&[u8]>()?).into_owned();
        Ok(Text::Escaped(escaped))
    }

    /// True when lone surrogates had to be escaped.
    pub fn is_escaped(&self) -> bool {
        matches!(self, Text::Escaped(_))
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Escaped(s) => s,
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary, or `None` when it
/// already fits.
pub fn truncate(s: &str, max: usize) -> Option<&str> {
    if s.len() <= max {
        return None;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(&s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "aé"; // 'é' is two bytes
        assert_eq!(truncate(s, 2), Some("a"));
        assert_eq!(truncate(s, 3), None);
        assert_eq!(truncate(s, 10), None);
        assert_eq!(truncate("abc", 0), Some(""));
    }
}
