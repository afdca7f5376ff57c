//! `bottle-sidecar`: the sidecar programs on their own (`egress`,
//! `git-gate`), for this crate's tests and for embedders who run a sidecar
//! without the CLI. `bottle sidecar …` is the same code, and the one that
//! bottles use.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args == ["--version"] {
        println!("bottle-sidecar {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let relaunch = match bottle_sidecar::Relaunch::current(&[]) {
        Ok(relaunch) => relaunch,
        Err(err) => {
            eprintln!("bottle-sidecar: cannot find the running executable: {err}");
            std::process::exit(1);
        }
    };
    std::process::exit(bottle_sidecar::main(&args, &relaunch));
}
