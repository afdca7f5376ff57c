//! bot-bottle embedded: start a bottle of the embedded default manifest's
//! `shell` agent, run a command in it, tear it down.

use bot_bottle::{BottleSpec, GuestUser, Host, Manifest, Session};

fn main() -> std::process::ExitCode {
    // This program is its bottles' sidecars too.
    bot_bottle::run_sidecar_if_asked();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> bot_bottle::Result<()> {
    let (providers, registry) = (bot_bottle::builtin_providers(), bot_bottle::default_registry());
    let host = Host::from_process()?;
    let manifest = std::sync::Arc::new(Manifest::embedded_default(&providers.names()));
    let cwd = std::env::current_dir().map_err(|e| bot_bottle::Error::io("reading the current directory", e))?;
    let backend = registry.select(None, host.var(bot_bottle::BACKEND_ENV))?;
    let session = Session::prepare(&BottleSpec::new(manifest, "shell", cwd), &providers, &host, backend).await?;
    eprintln!("{}", session.summary());
    let running = session.launch(std::future::pending()).await?;
    let out = running.bottle().exec("echo \"$(id -un) in $(hostname)\"", GuestUser::Agent).await?;
    print!("{}", out.stdout);
    println!("{}", running.slug());
    running.teardown().await?;
    Ok(())
}
