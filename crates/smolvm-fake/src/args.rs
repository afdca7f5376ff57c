//! Command-line parsing the way the real `smolvm` (clap) does it, for the
//! flags each command declares: `--long VALUE`, `--long=VALUE`, `-s VALUE`,
//! `-sVALUE`, bundled switches (`-it`), repeatable flags, `--` before a
//! trailing command. Anything undeclared is a usage error (exit 2).

use crate::Fail;

/// One flag a command accepts.
pub(crate) struct Flag {
    pub(crate) long: &'static str,
    pub(crate) short: Option<char>,
    /// Whether it takes a value (else it is a switch).
    pub(crate) value: bool,
}

/// Shorthand for a flag with a value.
pub(crate) const fn value(long: &'static str, short: Option<char>) -> Flag {
    Flag { long, short, value: true }
}

/// Shorthand for a switch.
pub(crate) const fn switch(long: &'static str, short: Option<char>) -> Flag {
    Flag { long, short, value: false }
}

/// What was given.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    values: Vec<(&'static str, String)>,
    switches: Vec<&'static str>,
    /// Positional arguments before any trailing command.
    pub(crate) positionals: Vec<String>,
    /// The command after `--` (or after the first positional, when `trailing` is allowed).
    pub(crate) trailing: Vec<String>,
}

impl Parsed {
    /// Every value of a repeatable flag, in order.
    pub(crate) fn all(&self, long: &str) -> Vec<String> {
        self.values.iter().filter(|(k, _)| *k == long).map(|(_, v)| v.clone()).collect()
    }

    /// A flag's value; given twice is a usage error.
    pub(crate) fn one(&self, long: &str) -> Result<Option<String>, Fail> {
        let mut all = self.all(long);
        match all.len() {
            0 => Ok(None),
            1 => Ok(all.pop()),
            _ => Err(Fail::usage(format!("the argument '--{long}' cannot be used multiple times"))),
        }
    }

    /// A required flag's value.
    pub(crate) fn required(&self, long: &str) -> Result<String, Fail> {
        self.one(long)?
            .ok_or_else(|| Fail::usage(format!("the following required arguments were not provided: --{long}")))
    }

    /// Whether a switch was given.
    pub(crate) fn has(&self, long: &str) -> bool {
        self.switches.contains(&long)
    }
}

/// Parse `args` against `flags`. With `trailing`, the first positional (or
/// whatever follows `--`) starts a command that takes the rest verbatim.
pub(crate) fn parse(args: &[String], flags: &[Flag], trailing: bool) -> Result<Parsed, Fail> {
    let mut parsed = Parsed::default();
    let mut i = 0;
    let take_value = |i: &mut usize, name: &str| -> Result<String, Fail> {
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| Fail::usage(format!("a value is required for '{name}' but none was supplied")))
    };
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            if trailing {
                parsed.trailing = args[i + 1..].to_vec();
            } else {
                parsed.positionals.extend(args[i + 1..].iter().cloned());
            }
            return Ok(parsed);
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let flag = flags
                .iter()
                .find(|f| f.long == name)
                .ok_or_else(|| Fail::usage(format!("unexpected argument '--{name}' found")))?;
            if flag.value {
                let v = match inline {
                    Some(v) => v,
                    None => take_value(&mut i, arg)?,
                };
                parsed.values.push((flag.long, v));
            } else if inline.is_some() {
                return Err(Fail::usage(format!("unexpected value for '--{name}'")));
            } else {
                parsed.switches.push(flag.long);
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            let chars: Vec<char> = arg[1..].chars().collect();
            let mut k = 0;
            while k < chars.len() {
                let c = chars[k];
                let flag = flags
                    .iter()
                    .find(|f| f.short == Some(c))
                    .ok_or_else(|| Fail::usage(format!("unexpected argument '-{c}' found")))?;
                if flag.value {
                    let rest: String = chars[k + 1..].iter().collect();
                    let v = if rest.is_empty() { take_value(&mut i, &format!("-{c}"))? } else { rest };
                    parsed.values.push((flag.long, v));
                    break;
                }
                parsed.switches.push(flag.long);
                k += 1;
            }
        } else if trailing {
            parsed.trailing = args[i..].to_vec();
            return Ok(parsed);
        } else {
            parsed.positionals.push(arg.clone());
        }
        i += 1;
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        value("name", Some('n')),
        value("env", Some('e')),
        switch("interactive", Some('i')),
        switch("tty", Some('t')),
    ];

    fn args(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_spelling_of_a_flag_is_understood() {
        let p =
            parse(&args(&["-n", "a", "--env=X=1", "-eY=2", "-it", "--", "sh", "-c", "x"]), FLAGS, true).expect("ok");
        assert_eq!(p.required("name").expect("name"), "a");
        assert_eq!(p.all("env"), ["X=1", "Y=2"]);
        assert!(p.has("interactive") && p.has("tty"));
        assert_eq!(p.trailing, ["sh", "-c", "x"]);
        let p = parse(&args(&["--name", "a", "true", "--name"]), FLAGS, true).expect("ok");
        assert_eq!(p.trailing, ["true", "--name"], "the command takes the rest verbatim");
    }

    #[test]
    fn unknown_or_incomplete_flags_are_usage_errors() {
        for bad in [&["--nope"][..], &["-x"], &["--name"], &["--tty=1"]] {
            let err = parse(&args(bad), FLAGS, false).expect_err("usage error");
            assert_eq!(err.code, 2, "{bad:?}");
        }
        let twice = parse(&args(&["-n", "a", "-n", "b"]), FLAGS, false).expect("parses");
        assert_eq!(twice.one("name").expect_err("twice").code, 2);
    }
}
