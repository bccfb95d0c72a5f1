//! The `images` allowlist: globs over the image name (the part after the stage path).

use std::fmt;

use super::error::Problem;

/// A glob over image names: `*` matches any run of characters (including `/`, so `*` allows
/// nested names like `team/app` too), `?` exactly one; everything else matches itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageGlob(String);

impl ImageGlob {
    /// Every image: what the allowlist is when the rules file has none.
    pub fn any() -> Self {
        ImageGlob("*".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        // Iterative wildcard matching with a single backtrack point: linear-ish, no recursion,
        // so a hostile pattern or name cannot blow up the stack or the clock.
        let pattern: Vec<char> = self.0.chars().collect();
        let text: Vec<char> = name.chars().collect();
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match pattern.get(p) {
                Some('*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(&c) if c == '?' || c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    // Let the last `*` swallow one more character and retry.
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

impl TryFrom<&str> for ImageGlob {
    type Error = Problem;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let invalid = |reason| Problem::InvalidGlob {
            pattern: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(invalid("is empty"));
        }
        // Image names are lowercase repository components; a pattern with other characters
        // would silently never match, which is worse than an error at start-up.
        if !value.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '.' | '_' | '-' | '/' | '*' | '?')
        }) {
            return Err(invalid(
                "can never match an image name: names are lowercase a-z, 0-9, '.', '_', '-' and '/' (globs add '*' and '?')",
            ));
        }
        Ok(ImageGlob(value.to_owned()))
    }
}

impl fmt::Display for ImageGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ImageGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageGlob({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> ImageGlob {
        ImageGlob::try_from(p).expect("valid glob")
    }

    #[test]
    fn star_and_question_mark() {
        assert!(glob("*").matches("my-app"));
        assert!(glob("*").matches("team/my-app"));
        assert!(glob("my-*").matches("my-app"));
        assert!(glob("my-*").matches("my-"));
        assert!(!glob("my-*").matches("your-app"));
        assert!(glob("*-api").matches("billing-api"));
        assert!(!glob("*-api").matches("billing-api-v2"));
        assert!(glob("app-?").matches("app-1"));
        assert!(!glob("app-?").matches("app-12"));
        assert!(!glob("app-?").matches("app-"));
        assert!(glob("a*b*c").matches("axxbyyc"));
        assert!(glob("a*b*c").matches("abc"));
        assert!(!glob("a*b*c").matches("acb"));
        assert!(glob("team/*").matches("team/x"));
        assert!(glob("exact").matches("exact"));
        assert!(!glob("exact").matches("exactly"));
        assert!(!glob("exact").matches("exac"));
        assert!(glob("**").matches(""));
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let pattern = glob(&"*a".repeat(50));
        let name = "a".repeat(49) + "b";
        assert!(!pattern.matches(&name));
    }

    #[test]
    fn rejects_patterns_that_cannot_match() {
        assert!(matches!(
            ImageGlob::try_from(""),
            Err(Problem::InvalidGlob { .. })
        ));
        assert!(matches!(
            ImageGlob::try_from("My-App"),
            Err(Problem::InvalidGlob { .. })
        ));
        assert!(matches!(
            ImageGlob::try_from("app[0-9]"),
            Err(Problem::InvalidGlob { .. })
        ));
    }
}
