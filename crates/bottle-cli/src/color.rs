//! The colours a bottle's `--color` may name: one table, drawn as ANSI
//! escapes by `list active` and as terminal colours by the dashboard.

/// A colour a `--color` value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Paint {
    /// One of the 16 terminal colours (0–7, and 8: bright black, grey).
    Basic(u8),
    /// One of the 256 indexed colours.
    Indexed(u8),
    /// A true colour.
    Rgb(u8, u8, u8),
}

impl Paint {
    /// The colour `color` names: a colour name (`red`, `green`, `yellow`,
    /// `blue`, `magenta`, `cyan`, `orange`, `pink`, `grey`, …) or `#rrggbb`.
    pub(crate) fn named(color: &str) -> Option<Paint> {
        let color = color.trim().to_ascii_lowercase();
        if let Some(hex) = color.strip_prefix('#').filter(|h| h.len() == 6) {
            let channel = |at: usize| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok();
            return Some(Paint::Rgb(channel(0)?, channel(2)?, channel(4)?));
        }
        Some(match color.as_str() {
            "black" => Paint::Basic(0),
            "red" => Paint::Basic(1),
            "green" => Paint::Basic(2),
            "yellow" => Paint::Basic(3),
            "blue" => Paint::Basic(4),
            "magenta" | "purple" => Paint::Basic(5),
            "cyan" => Paint::Basic(6),
            "white" => Paint::Basic(7),
            "gray" | "grey" => Paint::Basic(8),
            "orange" => Paint::Indexed(208),
            "pink" => Paint::Indexed(205),
            _ => return None,
        })
    }

    /// The ANSI SGR parameters that draw text in it.
    pub(crate) fn sgr(self) -> String {
        match self {
            Paint::Basic(8) => "90".to_string(),
            Paint::Basic(n) => format!("3{n}"),
            Paint::Indexed(n) => format!("38;5;{n}"),
            Paint::Rgb(r, g, b) => format!("38;2;{r};{g};{b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Paint;

    #[test]
    fn a_colour_name_or_hex_is_an_ansi_code_and_anything_else_none() {
        let check = |color: &str, expect: Option<&str>| {
            assert_eq!(Paint::named(color).map(Paint::sgr).as_deref(), expect, "{color}");
        };
        check("green", Some("32"));
        check(" Red ", Some("31"));
        check("grey", Some("90"));
        check("orange", Some("38;5;208"));
        check("#ff8000", Some("38;2;255;128;0"));
        for none in ["", "chartreuse", "#ff80", "#gg0000", "\x1b[2J"] {
            check(none, None);
        }
    }
}
