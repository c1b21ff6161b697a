//! Glob patterns of `PSUBSCRIBE`, with the syntax Redis documents: `*`, `?`,
//! `[abc]`, `[^abc]`, `[a-z]`, and `\` to escape the next byte.

/// Whether `text` matches `pattern`, byte by byte.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative with one backtrack point: the last `*` seen and where in `text`
    // it would resume. That keeps the cost linear-ish and the stack flat whatever
    // pattern a client sends.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            star = Some((p, t));
            p += 1;
            continue;
        }
        if let Some(next) = step(pattern, p, text[t]) {
            p = next;
            t += 1;
            continue;
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// If the one-byte token at `pattern[p]` (not `*`) matches `byte`: the index after it.
fn step(pattern: &[u8], p: usize, byte: u8) -> Option<usize> {
    match *pattern.get(p)? {
        b'?' => Some(p + 1),
        b'[' => match class(pattern, p, byte)? {
            (true, next) => Some(next),
            (false, _) => None,
        },
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == byte).then_some(p + 2),
        c => (c == byte).then_some(p + 1),
    }
}

/// Matches `byte` against the class opening at `pattern[start] == b'['`.
/// Returns whether it matched and the index after the class, or `None` when the
/// class is not closed (then it matches nothing, like a literal that never occurs).
fn class(pattern: &[u8], start: usize, byte: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    loop {
        match *pattern.get(i)? {
            b']' => return Some((hit != negate, i + 1)),
            b'\\' => {
                hit |= *pattern.get(i + 1)? == byte;
                i += 2;
            }
            lo if pattern.get(i + 1) == Some(&b'-')
                && pattern.get(i + 2).is_some_and(|&c| c != b']') =>
            {
                let hi = pattern[i + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                hit |= (lo..=hi).contains(&byte);
                i += 3;
            }
            c => {
                hit |= c == byte;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn m(p: &str, t: &str) -> bool {
        matches(p.as_bytes(), t.as_bytes())
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(m("*", "+switch-master"));
        assert!(m("*", ""));
        assert!(m("+switch*", "+switch-master"));
        assert!(m("*master", "+switch-master"));
        assert!(m("+s*h-*r", "+switch-master"));
        assert!(m("+switch-maste?", "+switch-master"));
        assert!(!m("+switch-maste?", "+switch-maste"));
        assert!(!m("-switch*", "+switch-master"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn classes_ranges_negation_and_escapes() {
        assert!(m("[+-]switch-master", "+switch-master"));
        assert!(m("+[a-z]witch-master", "+switch-master"));
        assert!(m("+[z-a]witch-master", "+switch-master"));
        assert!(!m("+[^s]witch-master", "+switch-master"));
        assert!(m("+[^x]witch-master", "+switch-master"));
        assert!(m("\\+switch-master", "+switch-master"));
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(!m("\\a", "\\"));
        assert!(m("a\\", "a\\"));
        assert!(m("[\\]]", "]"));
        assert!(!m("[abc", "a"));
    }

    #[test]
    fn long_hostile_patterns_stay_fast() {
        let pattern = "*a".repeat(200) + "b";
        let text = "a".repeat(5000);
        assert!(!m(&pattern, &text));
    }
}
