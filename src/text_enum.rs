//! One mechanism for the enums that are spelled as text somewhere — in a
//! connection string (`sslmode`, `target_session_attrs`,
//! `channel_binding`), in relink's state schema (run modes and statuses),
//! in reports and metrics (reject reasons, link types, throttle causes), on
//! a test's command line (stop points): [`text_enum!`] gives each the same
//! `ALL` (declaration order), `as_str`, `Display`, `FromStr` (an
//! [`UnknownText`] naming the accepted values) and [`TextEnum::accepted`],
//! so a new variant is spelled once.

use std::fmt;

/// An enum whose variants are spelled as text; implemented by
/// [`text_enum!`].
pub trait TextEnum: Sized + Copy + 'static {
    /// What a value of the enum is, for messages ("sslmode", "run status").
    const WHAT: &'static str;

    /// Every variant, in declaration order.
    fn all() -> &'static [Self];

    /// The variant's spelling.
    fn text(self) -> &'static str;

    /// The variant spelled exactly `text`.
    fn from_text(text: &str) -> Option<Self> {
        Self::all().iter().copied().find(|v| v.text() == text)
    }

    /// The accepted spellings, for messages: "a, b or c".
    fn accepted() -> String {
        let all: Vec<&str> = Self::all().iter().map(|v| v.text()).collect();
        match all.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// A text that spells no variant of an enum. `Display`: "unknown WHAT
/// "TEXT" (expected a, b or c)".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {text:?} (expected {accepted})")]
pub struct UnknownText {
    pub what: &'static str,
    pub text: String,
    pub accepted: String,
}

impl UnknownText {
    /// `text` does not spell a `T`.
    pub fn of<T: TextEnum>(text: &str) -> Self {
        Self {
            what: T::WHAT,
            text: text.to_owned(),
            accepted: T::accepted(),
        }
    }
}

/// Parses `text` as a `T`.
///
/// # Errors
/// [`UnknownText`] naming the accepted spellings.
pub fn parse<T: TextEnum>(text: &str) -> Result<T, UnknownText> {
    T::from_text(text).ok_or_else(|| UnknownText::of::<T>(text))
}

/// Writes `value`'s spelling, honouring width and alignment (`{:<10}`).
///
/// # Errors
/// As [`fmt::Formatter::pad`].
pub fn pad<T: TextEnum>(value: T, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.pad(value.text())
}

/// Spells an existing enum's variants: `text_enum!(Mode "run mode" { Run =
/// "run", Purge = "purge" })` adds `Mode::ALL` (an array, in declaration
/// order), `Mode::as_str`, [`TextEnum`], `Display` and `FromStr`
/// (`Err = UnknownText`).
macro_rules! text_enum {
    ($ty:ident $what:literal { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: [Self; [$($text),+].len()] = [$(Self::$variant),+];

            /// The variant's spelling.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl $crate::text_enum::TextEnum for $ty {
            const WHAT: &'static str = $what;

            fn all() -> &'static [Self] {
                &Self::ALL
            }

            fn text(self) -> &'static str {
                self.as_str()
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                $crate::text_enum::pad(*self, f)
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::text_enum::UnknownText;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $crate::text_enum::parse(text)
            }
        }
    };
}

pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Colour {
        Red,
        DarkBlue,
        Green,
    }

    text_enum!(Colour "colour" { Red = "red", DarkBlue = "dark-blue", Green = "green" });

    #[test]
    fn spelled_once_read_back_listed_in_errors() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::DarkBlue, Colour::Green]);
        for colour in Colour::ALL {
            assert_eq!(colour.to_string().parse::<Colour>(), Ok(colour));
        }
        assert_eq!(format!("[{:<10}]", Colour::Red), "[red       ]");
        assert_eq!(Colour::accepted(), "red, dark-blue or green");
        let err = "blue".parse::<Colour>().expect_err("not a colour");
        assert_eq!(
            err.to_string(),
            "unknown colour \"blue\" (expected red, dark-blue or green)"
        );
    }
}
