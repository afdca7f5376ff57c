//! The host's own address on Docker's default bridge, where bottles' sidecars
//! reach servers that tests run on the host. It is read from the bridge's
//! subnet and the host's interfaces, never from the network's `Gateway`: a
//! freshly started daemon that made `docker0` itself reports none.
//!
//! Shared by the e2e tests and the smolvm fake's tests (`#[path]`).

use std::net::Ipv4Addr;
use std::process::Command;

/// The host's IPv4 address inside the default bridge's subnet.
pub(crate) fn host_address() -> String {
    let out = Command::new("docker")
        .args(["network", "inspect", "bridge", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"])
        .output()
        .expect("docker network inspect bridge");
    let subnets = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "docker network inspect bridge: {}", String::from_utf8_lossy(&out.stderr));
    let subnets: Vec<(Ipv4Addr, u32)> = subnets.split_whitespace().filter_map(cidr).collect();
    let out = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().expect("ip -4 -o addr show");
    assert!(out.status.success(), "ip -4 -o addr show: {}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let found = listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|word| *word == "inet")?;
            cidr(words.next()?).map(|(addr, _)| addr)
        })
        .find(|addr| subnets.iter().any(|&(net, bits)| within(*addr, net, bits)));
    match found {
        Some(addr) => addr.to_string(),
        None => panic!("no address of this host lies in Docker's default bridge subnets {subnets:?}:\n{listing}"),
    }
}

fn cidr(text: &str) -> Option<(Ipv4Addr, u32)> {
    let (addr, bits) = text.split_once('/')?;
    Some((addr.parse().ok()?, bits.parse().ok().filter(|bits| *bits <= 32)?))
}

fn within(addr: Ipv4Addr, net: Ipv4Addr, bits: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(addr) & mask == u32::from(net) & mask
}
