//! A tiny SQL lexer: words, quoted identifiers, brackets, literals (strings, `E''` strings,
//! dollar quotes, numbers, parameters) and punctuation; whitespace and comments are skipped.

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok<'a> {
    /// Unquoted word (keyword or identifier), as written.
    Word(&'a str),
    /// Double-quoted identifier, without the quotes.
    Quoted(&'a str),
    Open,
    Close,
    Dot,
    Semi,
    Comma,
    Star,
    /// A string or numeric literal, or a parameter (`$1`): `?` in the normalised text.
    Literal,
    /// Any other punctuation (an operator character).
    Other,
}

impl Tok<'_> {
    pub(super) fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// A tiny SQL lexer: skips whitespace, comments (`--`, nested `/* */`), string literals
/// (`'…'`, `E'…'`, `$tag$…$tag$`) and numbers; yields words, quoted identifiers and brackets.
pub(super) struct Lexer<'a> {
    s: &'a str,
    b: &'a [u8],
    pub(super) i: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    pub(super) fn skip_trivia(&mut self) {
        loop {
            let b = self.b;
            while self.i < b.len() && b[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
            if b[self.i..].starts_with(b"--") {
                while self.i < b.len() && b[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if b[self.i..].starts_with(b"/*") {
                let mut depth = 0usize;
                while self.i < b.len() {
                    if b[self.i..].starts_with(b"/*") {
                        depth += 1;
                        self.i += 2;
                    } else if b[self.i..].starts_with(b"*/") {
                        depth -= 1;
                        self.i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        self.i += 1;
                    }
                }
            } else {
                return;
            }
        }
    }

    /// Skip past the closing `delim` (doubled delimiters are escapes). Returns the index of the
    /// closing delimiter, or the end of input if there is none.
    fn skip_until(&mut self, delim: u8) -> usize {
        while self.i < self.b.len() {
            if self.b[self.i] == delim {
                if self.b.get(self.i + 1) == Some(&delim) {
                    self.i += 2;
                    continue;
                }
                self.i += 1;
                return self.i - 1;
            }
            self.i += 1;
        }
        self.b.len()
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Tok<'a>;

    fn next(&mut self) -> Option<Tok<'a>> {
        self.skip_trivia();
        let b = self.b;
        let c = *b.get(self.i)?;
        let start = self.i;
        match c {
            b'(' => {
                self.i += 1;
                Some(Tok::Open)
            }
            b')' => {
                self.i += 1;
                Some(Tok::Close)
            }
            b'.' if !b.get(self.i + 1).is_some_and(u8::is_ascii_digit) => {
                self.i += 1;
                Some(Tok::Dot)
            }
            b';' => {
                self.i += 1;
                Some(Tok::Semi)
            }
            b',' => {
                self.i += 1;
                Some(Tok::Comma)
            }
            b'*' => {
                self.i += 1;
                Some(Tok::Star)
            }
            b'\'' => {
                self.i += 1;
                self.skip_until(b'\'');
                Some(Tok::Literal)
            }
            c if c.is_ascii_digit() || c == b'.' => {
                // A number (the Dot case above took `.` not followed by a digit).
                self.i += 1;
                while self.i < b.len()
                    && (b[self.i].is_ascii_alphanumeric() || b[self.i] == b'.' || b[self.i] == b'_')
                {
                    self.i += 1;
                }
                Some(Tok::Literal)
            }
            b'"' => {
                self.i += 1;
                let inner = self.i;
                let end = self.skip_until(b'"');
                Some(Tok::Quoted(&self.s[inner..end]))
            }
            b'$' => {
                // $1 parameter, or a dollar-quoted string $tag$ ... $tag$.
                let mut j = self.i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j < b.len() && b[j] == b'$' && !b[self.i + 1..j].iter().all(u8::is_ascii_digit)
                    || j < b.len() && b[j] == b'$' && j == self.i + 1
                {
                    let tag = &b[self.i..=j];
                    self.i = j + 1;
                    while self.i < b.len() && !b[self.i..].starts_with(tag) {
                        self.i += 1;
                    }
                    self.i = (self.i + tag.len()).min(b.len());
                } else {
                    self.i = j;
                }
                Some(Tok::Literal)
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                // E'…' escape string.
                if (c == b'e' || c == b'E') && b.get(self.i + 1) == Some(&b'\'') {
                    self.i += 2;
                    while self.i < b.len() {
                        match b[self.i] {
                            b'\\' => self.i += 2,
                            b'\'' if b.get(self.i + 1) == Some(&b'\'') => self.i += 2,
                            b'\'' => {
                                self.i += 1;
                                break;
                            }
                            _ => self.i += 1,
                        }
                    }
                    self.i = self.i.min(b.len());
                    return Some(Tok::Literal);
                }
                while self.i < b.len()
                    && (b[self.i].is_ascii_alphanumeric()
                        || b[self.i] == b'_'
                        || b[self.i] == b'$'
                        || b[self.i] >= 0x80)
                {
                    self.i += 1;
                }
                Some(Tok::Word(&self.s[start..self.i]))
            }
            _ => {
                // Operators: consume one char (whole UTF-8 sequence).
                self.i += 1;
                while self.i < b.len() && !self.s.is_char_boundary(self.i) {
                    self.i += 1;
                }
                Some(Tok::Other)
            }
        }
    }
}
