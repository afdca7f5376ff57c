//! What `bottle doctor` says of the Docker Engine: whether it answers and
//! which release it is, whether that release has the fix for
//! CVE-2024-29018, whether the base image the bundled Dockerfiles build
//! `FROM` is there (this machine may have no registry), which of the
//! agents' and the sidecars' images are built, and whether the daemon
//! offers gVisor (`runsc`).

use bollard::Docker;
use bottle_core::backend::pack_context;
use bottle_core::provider::ImageRecipe;
use bottle_core::{Check, Version};

use crate::engine::{Engine, engine_address};
use crate::plan::RUNTIME_ENV;

/// The CVE whose fix [`has_dns_fix`] looks for.
const DNS_CVE: &str = "CVE-2024-29018";

/// Every check of the engine behind `engine`.
pub(crate) async fn diagnose(engine: &Engine, agent_images: &[ImageRecipe]) -> Vec<Check> {
    let docker = match engine.client().await {
        Ok(docker) => docker,
        Err(e) => return vec![Check::fail("docker engine", e.message())],
    };
    let version = match docker.version().await {
        Ok(version) => version,
        Err(e) => {
            let e = crate::engine::failed("say its version")(e);
            return vec![Check::fail("docker engine", format!("{} at {}", e.message(), engine_address()))];
        }
    };
    let release = version.version.clone().unwrap_or_else(|| "of an unknown release".into());
    let api = version.api_version.clone().unwrap_or_else(|| "?".into());
    let mut checks = vec![Check::ok(
        "docker engine",
        format!("Docker Engine {release} (API {api}) answers at {}", engine_address()),
    )];
    checks.push(dns_check(&release));
    let mut recipes = agent_images.to_vec();
    match crate::sidecar::recipe(agent_images.iter().find_map(|r| r.host_ca_bundle.clone())) {
        Ok(sidecar) => recipes.push(sidecar),
        Err(e) => checks.push(Check::warn("image bot-bottle/sidecar", format!("cannot say: {}", e.message()))),
    }
    checks.extend(base_checks(docker, &recipes).await);
    for recipe in recipes {
        checks.push(image_check(docker, recipe).await);
    }
    checks.push(runtime_check(docker).await);
    checks
}

/// Whether Docker Engine `release` has the fix for [`DNS_CVE`] (internal
/// networks' DNS forwarded from the host's namespace): 26.0.0, 25.0.4 and
/// 23.0.11 have it; 24.x and everything before 23.0.11 do not.
fn has_dns_fix(release: Version) -> bool {
    match release.0 {
        26.. => true,
        25 => release >= Version(25, 0, 4),
        23 => release >= Version(23, 0, 11),
        _ => false,
    }
}

fn dns_check(release: &str) -> Check {
    let what = format!("docker {DNS_CVE}");
    match Version::parse(release) {
        Some(version) if has_dns_fix(version) => Check::ok(what, format!("{release} has the fix")),
        Some(_) => Check::warn(
            what,
            format!(
                "Docker Engine {release} is older than the releases that fixed it (23.0.11, 25.0.4, 26.0), unless \
                 your distribution backported the fix: containers on an internal network can reach the outside \
                 through the engine's DNS, which forwards from the host's namespace. bot-bottle's bottles have no \
                 network at all, so they are not exposed; other containers on this engine are"
            ),
        )
        .with_fix("upgrade the engine to 26.0 or later (or 25.0.4+, 23.0.11+)"),
        None => Check::warn(what, format!("cannot tell from the release `{release}` whether it has the fix")),
    }
}

/// The images `dockerfile` builds `FROM` (not `scratch`, not its own stages,
/// not one named by a build argument).
fn bases(dockerfile: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut found = Vec::new();
    for line in dockerfile.lines() {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        let Some(image) = rest.first() else { continue };
        let known_stage = stages.contains(&image.to_ascii_lowercase());
        if rest.get(1).is_some_and(|w| w.eq_ignore_ascii_case("as")) {
            stages.extend(rest.get(2).map(|stage| stage.to_ascii_lowercase()));
        }
        if *image != "scratch" && !image.contains('$') && !known_stage && !found.iter().any(|f| f == image) {
            found.push(image.to_string());
        }
    }
    found
}

/// One check per base image the recipes build `FROM`.
async fn base_checks(docker: &Docker, recipes: &[ImageRecipe]) -> Vec<Check> {
    let mut seen: Vec<String> = Vec::new();
    for recipe in recipes {
        for base in bases(&recipe.dockerfile) {
            if !seen.contains(&base) {
                seen.push(base);
            }
        }
    }
    let mut checks = Vec::new();
    for base in seen {
        let what = format!("base image {base}");
        checks.push(match crate::image::exists(docker, &base).await {
            Ok(true) => Check::ok(what, "present: the bundled Dockerfiles build FROM it"),
            Ok(false) => Check::warn(
                what,
                "absent: the bundled Dockerfiles build FROM it, and without it a build needs a registry",
            )
            .with_fix(format!(
                "`cargo xtask setup` in a bot-bottle checkout makes it offline (debootstrap + `docker import`), or \
                 `docker pull {base}` where a registry is reachable"
            )),
            Err(e) => Check::warn(what, format!("cannot say: {}", e.message())),
        });
    }
    checks
}

/// Whether the engine has the image `recipe` builds (its content-addressed tag).
async fn image_check(docker: &Docker, recipe: ImageRecipe) -> Check {
    let what = format!("image {}", recipe.repository);
    let context = match pack_context(recipe, "agent").await {
        Ok(context) => context,
        Err(e) => return Check::info(what, format!("cannot say: {}", e.message())),
    };
    match crate::image::exists(docker, &context.tag).await {
        Ok(true) => Check::info(what, format!("built ({})", context.tag)),
        Ok(false) => Check::info(
            what,
            format!("not built: the first bottle that runs it builds {} (a build takes minutes)", context.tag),
        ),
        Err(e) => Check::info(what, format!("cannot say: {}", e.message())),
    }
}

/// Whether the daemon offers gVisor (`runsc`), which bottles then run under;
/// never a failure: runc with no network is bot-bottle's baseline.
async fn runtime_check(docker: &Docker) -> Check {
    let info = match docker.info().await {
        Ok(info) => info,
        Err(e) => return Check::warn("runsc", format!("cannot say: {}", crate::engine::failed("describe itself")(e))),
    };
    let mut offered: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
    offered.sort();
    let explicit = std::env::var(RUNTIME_ENV).ok().filter(|v| !v.is_empty());
    if let Some(runtime) = explicit.filter(|r| !offered.contains(r)) {
        return Check::warn(
            "runsc",
            format!(
                "{RUNTIME_ENV}={runtime} names a runtime the daemon does not offer ({}): bottles will not start",
                offered.join(", ")
            ),
        )
        .with_fix(format!("unset {RUNTIME_ENV}, or register `{runtime}` with the daemon"));
    }
    if offered.iter().any(|r| r == "runsc") {
        return Check::ok("runsc", "the daemon offers gVisor (runsc): bottles run under it");
    }
    Check::info(
        "runsc",
        format!(
            "the daemon offers no gVisor (runsc; it has {}): bottles run under its default runtime, with no network",
            offered.join(", ")
        ),
    )
    .with_fix("for a second boundary, install gVisor and register it as `runsc` in /etc/docker/daemon.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_fix_is_in_23_0_11_25_0_4_and_26() {
        for (release, fixed) in [
            ("20.10.24+dfsg1", false),
            ("23.0.10", false),
            ("23.0.11", true),
            ("23.0.15", true),
            ("24.0.9", false),
            ("25.0.3", false),
            ("25.0.4", true),
            ("25.0.10", true),
            ("26.0.0", true),
            ("28.2.2", true),
        ] {
            let version = Version::parse(release).expect(release);
            assert_eq!(has_dns_fix(version), fixed, "{release}");
        }
        assert_eq!(dns_check("20.10.24+dfsg1").status, bottle_core::CheckStatus::Warn);
        assert!(dns_check("20.10.24+dfsg1").finding.contains("bottles have no network at all"));
        assert_eq!(dns_check("26.1.0").status, bottle_core::CheckStatus::Ok);
        assert_eq!(dns_check("nightly").status, bottle_core::CheckStatus::Warn);
    }

    #[test]
    fn bases_are_the_from_images_but_stages_scratch_and_arguments() {
        let dockerfile = "# FROM comment\nFROM --platform=linux/amd64 debian:bookworm-slim AS build\nRUN x\n\
                          from build\nFROM scratch\nFROM ${BASE}\nFROM alpine:3\nFROM debian:bookworm-slim\n";
        assert_eq!(bases(dockerfile), ["debian:bookworm-slim", "alpine:3"]);
    }
}
