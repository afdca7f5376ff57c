//! `bottle-sidecar`: the programs that run beside a bottle — `egress` (the
//! allow-list proxy) and `git-gate` (the push gate) — each reading its JSON
//! configuration from a file the backend wrote.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["egress", "--config", path] => bottle_sidecar::egress::main(path),
        ["git-gate", "--config", path] => bottle_sidecar::gitgate::main(path),
        ["--version"] => {
            println!("bottle-sidecar {}", env!("CARGO_PKG_VERSION"));
            0
        }
        _ => {
            eprintln!(
                "usage: bottle-sidecar egress --config FILE.json\n       bottle-sidecar git-gate --config FILE.json"
            );
            2
        }
    };
    std::process::exit(code);
}
