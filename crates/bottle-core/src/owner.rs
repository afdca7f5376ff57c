//! Who owns a bottle's resources: host name, PID and the PID's start time, so
//! `cleanup` can tell a live owner from a dead one (and from a reused PID).

use serde::{Deserialize, Serialize};

/// The process that created a bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Host name of the machine the owner runs on.
    pub host: String,
    /// The owner's PID.
    pub pid: u32,
    /// The PID's start time (clock ticks since boot on Linux; 0 where unknown).
    pub pid_start: u64,
    /// When the bottle was created, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Whether an owner process still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It runs (or cannot be checked from here and is presumed to).
    Alive,
    /// It is gone.
    Gone,
    /// It runs on another host; nothing can be said.
    OtherHost,
}

impl Owner {
    /// The current process, now.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner { host: host_name(), pid, pid_start: pid_start(pid).unwrap_or(0), created_ms: now_ms() }
    }

    /// Whether this owner still runs, as seen from this host.
    pub fn liveness(&self) -> Liveness {
        if self.host != host_name() {
            return Liveness::OtherHost;
        }
        if !cfg!(target_os = "linux") {
            return Liveness::Alive;
        }
        match pid_start(self.pid) {
            None => Liveness::Gone,
            Some(start) if self.pid_start != 0 && start != self.pid_start => Liveness::Gone,
            Some(_) => Liveness::Alive,
        }
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Start time of `pid` (field 22 of `/proc/PID/stat`), `None` when it does not exist.
fn pid_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')': field 3 is index 0, so field 22 is index 19.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_a_dead_pid_is_gone() {
        let me = Owner::current();
        assert_eq!(me.liveness(), Liveness::Alive);
        assert_ne!(me.pid_start, 0, "pid start time should be readable on Linux");
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        let started = pid_start(pid);
        child.wait().expect("wait");
        let dead = Owner { pid, pid_start: started.unwrap_or(1), ..me.clone() };
        assert_eq!(dead.liveness(), Liveness::Gone);
        let reused = Owner { pid: me.pid, pid_start: me.pid_start + 1, ..me.clone() };
        assert_eq!(reused.liveness(), Liveness::Gone, "a reused pid is not the owner");
        let elsewhere = Owner { host: "elsewhere.invalid".into(), ..me };
        assert_eq!(elsewhere.liveness(), Liveness::OtherHost);
    }
}
