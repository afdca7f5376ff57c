//! What only the Docker Engine shows: the limits the summary names are the
//! ones the engine holds for the agent and its sidecars, and logs rotate.

use bottle_testkit::World;

use crate::{Docker, inspect};

bottle_testkit::test!(docker_holds_the_limits_the_summary_shows, Docker, the_limits_the_summary_shows);

async fn the_limits_the_summary_shows(world: &World) {
    let manifest = world.shell_manifest("limits.yaml", "    resources: { memory: 256m, cpus: 0.5, pids: 300 }\n");
    let session = world.prepare(&world.spec(manifest), &[]).await;
    let summary = session.summary();
    assert!(summary.contains("memory 256 MiB (no swap), 0.5 CPUs, 300 processes"), "{summary}");
    let running = session.launch(std::future::pending()).await.expect("launch");
    let slug = running.slug().to_string();
    let agent = format!("bb-{slug}");
    let limits = "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}";
    assert_eq!(inspect(&agent, limits), format!("{} {} 500000000 300", 256 << 20, 256 << 20));
    assert_eq!(inspect(&agent, "{{index .HostConfig.LogConfig.Config \"max-size\"}}"), "10m", "logs rotate");
    let egress = format!("bb-{slug}-egress");
    assert_eq!(inspect(&egress, "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}"), format!("{} 512", 256 << 20));
    running.teardown().await.expect("teardown");
}
