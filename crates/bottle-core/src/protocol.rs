//! The sidecar start protocol: the one contract between a backend that
//! starts the programs beside a bottle and the programs themselves. Both
//! sides use this module, so the command line and the readiness line are
//! written once:
//!
//! - the command line, after the executable's own `sidecar` word:
//!   `egress --config FILE`, `git-gate --config FILE`,
//!   `supervise --config FILE` or `relay ADDRESS=SOCKET…` ([`SidecarCommand`]);
//! - once a program listens it prints exactly one line on stderr,
//!   `SUBCOMMAND: listening on ADDRESS` ([`SidecarProcess::ready_line`]); a
//!   backend waits for that line ([`SidecarProcess::listening_on`]) and
//!   treats the program's exit before it as a failed start.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::bottle::Sidecar;

/// One of the programs a backend starts beside a bottle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SidecarProcess {
    /// The egress proxy.
    Egress,
    /// The git gate.
    GitGate,
    /// The supervise MCP server (for a bottle whose manifest says `supervise: true`).
    Supervise,
    /// The relay that carries a network-less bottle's loopback ports to
    /// its sidecars' unix sockets.
    Relay,
}

impl SidecarProcess {
    /// Every program, in the order they stop (the relay first: nothing new
    /// reaches the sidecars once it is gone).
    pub const STOP_ORDER: [SidecarProcess; 4] =
        [SidecarProcess::Relay, SidecarProcess::Supervise, SidecarProcess::GitGate, SidecarProcess::Egress];

    /// Its short name (`egress`, `gate`, `supervise`, `relay`): role label, container or
    /// file name suffix, log prefix in messages.
    pub fn name(self) -> &'static str {
        match self {
            SidecarProcess::Egress => Sidecar::Egress.name(),
            SidecarProcess::GitGate => Sidecar::GitGate.name(),
            SidecarProcess::Supervise => "supervise",
            SidecarProcess::Relay => "relay",
        }
    }

    /// The subcommand that runs it (`egress`, `git-gate`, `supervise`, `relay`).
    pub fn subcommand(self) -> &'static str {
        match self {
            SidecarProcess::Egress => Sidecar::Egress.subcommand(),
            SidecarProcess::GitGate => Sidecar::GitGate.subcommand(),
            SidecarProcess::Supervise => "supervise",
            SidecarProcess::Relay => "relay",
        }
    }

    /// The sidecar with an audit log it is, or `None` for supervise (its
    /// queue is its record) and the relay.
    pub fn sidecar(self) -> Option<Sidecar> {
        match self {
            SidecarProcess::Egress => Some(Sidecar::Egress),
            SidecarProcess::GitGate => Some(Sidecar::GitGate),
            SidecarProcess::Supervise | SidecarProcess::Relay => None,
        }
    }

    /// The line the program prints on stderr once it listens on `addr`.
    pub fn ready_line(self, addr: &str) -> String {
        format!("{}{addr}", self.ready_prefix())
    }

    /// Where the program says it listens, from the first readiness line in
    /// `log` (its stderr so far); `None` while it has not said so.
    pub fn listening_on(self, log: &str) -> Option<&str> {
        let prefix = self.ready_prefix();
        log.lines().find_map(|line| line.trim_end().strip_prefix(prefix.as_str()))
    }

    fn ready_prefix(self) -> String {
        format!("{}: listening on ", self.subcommand())
    }
}

impl From<Sidecar> for SidecarProcess {
    fn from(sidecar: Sidecar) -> Self {
        match sidecar {
            Sidecar::Egress => SidecarProcess::Egress,
            Sidecar::GitGate => SidecarProcess::GitGate,
        }
    }
}

/// One relay route: a loopback address in the bottle and the sidecar socket
/// it leads to, written `ADDRESS=SOCKET` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPair {
    /// The address the relay listens on (`IP:PORT`).
    pub listen: SocketAddr,
    /// The sidecar's unix socket (an absolute path).
    pub socket: PathBuf,
}

impl RelayPair {
    /// `ADDRESS=SOCKET` read back, with what is wrong with it when it is not one.
    pub fn parse(arg: &str) -> Result<RelayPair, String> {
        let (listen, socket) =
            arg.split_once('=').ok_or_else(|| format!("`{arg}` is not ADDRESS=SOCKET (e.g. 127.0.0.1:3128=/s)"))?;
        let listen = listen.parse().map_err(|_| format!("`{listen}` in `{arg}` is not an IP:PORT address"))?;
        if !socket.starts_with('/') {
            return Err(format!("`{socket}` in `{arg}` is not an absolute socket path"));
        }
        Ok(RelayPair { listen, socket: PathBuf::from(socket) })
    }
}

impl fmt::Display for RelayPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.listen, self.socket.display())
    }
}

/// A sidecar program's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SidecarCommand {
    /// `egress --config FILE`.
    Egress {
        /// The configuration file ([`EgressConfig`](crate::sidecar::EgressConfig) as JSON).
        config: String,
    },
    /// `git-gate --config FILE`.
    GitGate {
        /// The configuration file ([`GitGateConfig`](crate::sidecar::GitGateConfig) as JSON).
        config: String,
    },
    /// `supervise --config FILE`.
    Supervise {
        /// The configuration file ([`SuperviseConfig`](crate::sidecar::SuperviseConfig) as JSON).
        config: String,
    },
    /// `relay ADDRESS=SOCKET…`.
    Relay {
        /// Its routes (at least one).
        pairs: Vec<RelayPair>,
    },
}

impl SidecarCommand {
    /// What the programs accept, after the executable's own prefix.
    pub const USAGE: &'static str = "egress --config FILE.json | git-gate --config FILE.json | supervise --config FILE.json | relay ADDRESS=SOCKET…";

    /// The command that runs `sidecar` with the configuration file `config`.
    pub fn configured(sidecar: Sidecar, config: impl Into<String>) -> Self {
        let config = config.into();
        match sidecar {
            Sidecar::Egress => SidecarCommand::Egress { config },
            Sidecar::GitGate => SidecarCommand::GitGate { config },
        }
    }

    /// Which program it runs.
    pub fn process(&self) -> SidecarProcess {
        match self {
            SidecarCommand::Egress { .. } => SidecarProcess::Egress,
            SidecarCommand::GitGate { .. } => SidecarProcess::GitGate,
            SidecarCommand::Supervise { .. } => SidecarProcess::Supervise,
            SidecarCommand::Relay { .. } => SidecarProcess::Relay,
        }
    }

    /// Its arguments, the `sidecar` word first (`bottle`'s subcommand).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["sidecar".to_string(), self.process().subcommand().to_string()];
        match self {
            SidecarCommand::Egress { config }
            | SidecarCommand::GitGate { config }
            | SidecarCommand::Supervise { config } => {
                args.extend(["--config".to_string(), config.clone()]);
            }
            SidecarCommand::Relay { pairs } => args.extend(pairs.iter().map(RelayPair::to_string)),
        }
        args
    }

    /// The command `args` (after the `sidecar` word) name, or what is wrong
    /// with them.
    pub fn parse(args: &[String]) -> Result<SidecarCommand, String> {
        match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["egress", "--config", config] => Ok(SidecarCommand::Egress { config: config.to_string() }),
            ["git-gate", "--config", config] => Ok(SidecarCommand::GitGate { config: config.to_string() }),
            ["supervise", "--config", config] => Ok(SidecarCommand::Supervise { config: config.to_string() }),
            ["relay"] => {
                Err("relay needs at least one ADDRESS=SOCKET pair, e.g. 127.0.0.1:3128=/run/bot-bottle/egress.sock"
                    .into())
            }
            ["relay", pairs @ ..] => Ok(SidecarCommand::Relay {
                pairs: pairs.iter().map(|pair| RelayPair::parse(pair)).collect::<Result<_, _>>()?,
            }),
            _ => Err(format!("expected {}", Self::USAGE)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn a_command_reads_back_what_it_writes() {
        let relay = SidecarCommand::Relay {
            pairs: vec![
                RelayPair::parse("127.0.0.1:3128=/run/s/egress.sock").expect("pair"),
                RelayPair::parse("127.0.0.1:8080=/run/s/gate.sock").expect("pair"),
            ],
        };
        for command in [
            SidecarCommand::configured(Sidecar::Egress, "/c.json"),
            SidecarCommand::configured(Sidecar::GitGate, "/g.json"),
            SidecarCommand::Supervise { config: "/s.json".into() },
            relay,
        ] {
            let args = command.args();
            assert_eq!(args[0], "sidecar");
            assert_eq!(SidecarCommand::parse(&args[1..]), Ok(command.clone()), "{args:?}");
        }
        assert_eq!(
            SidecarCommand::configured(Sidecar::GitGate, "/g.json").args(),
            ["sidecar", "git-gate", "--config", "/g.json"]
        );
    }

    #[test]
    fn a_bad_command_line_says_what_is_wrong() {
        let err = |args: &[&str]| SidecarCommand::parse(&strings(args)).expect_err("refused");
        assert!(err(&["egress"]).contains(SidecarCommand::USAGE));
        assert!(err(&["relay"]).contains("at least one ADDRESS=SOCKET"));
        assert!(err(&["relay", "127.0.0.1:1"]).contains("is not ADDRESS=SOCKET"));
        assert!(err(&["relay", "localhost:1=/s"]).contains("not an IP:PORT address"));
        assert!(err(&["relay", "127.0.0.1:1=s"]).contains("not an absolute socket path"));
        let pair = RelayPair::parse("[::1]:8080=/run/b/gate.sock").expect("an IPv6 pair");
        assert_eq!(pair.listen, "[::1]:8080".parse().expect("addr"));
        assert_eq!(pair.socket, PathBuf::from("/run/b/gate.sock"));
    }

    #[test]
    fn the_ready_line_is_found_only_for_its_own_program() {
        let log = "starting\ngit-gate: listening on unix:/run/g.sock\n";
        assert_eq!(SidecarProcess::GitGate.listening_on(log), Some("unix:/run/g.sock"));
        assert_eq!(SidecarProcess::Egress.listening_on(log), None);
        let line = SidecarProcess::Egress.ready_line("127.0.0.1:3128");
        assert_eq!(line, "egress: listening on 127.0.0.1:3128");
        assert_eq!(SidecarProcess::Egress.listening_on(&line), Some("127.0.0.1:3128"));
    }
}
