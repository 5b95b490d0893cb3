//! Sized volumes on the real engine: the workload feels the declared size as ENOSPC, its data
//! outlives a replaced container, leaves with the workload, and the disk floor refuses new
//! volumes and pulls with a reason. Needs root and the Docker engine (skipped without it).

mod common;

use common::docker::*;
use latticed::runtime::docker::DockerRuntime;
use latticed::runtime::{ContainerRuntime, RuntimeError};
use latticed::volumes::{is_mount_point, VolumeHost};

async fn observed(node: &Node, container_id: &str) -> latticed::runtime::Observed {
    node.rt
        .list_owned(&node.id)
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.container_id == container_id)
        .expect("listed")
}

fn logs(container_id: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["logs", container_id])
        .output()
        .expect("docker logs");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

async fn wait_log(container_id: &str, needle: &str) -> String {
    for _ in 0..200 {
        let text = logs(container_id);
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no {needle:?} in logs:\n{}", logs(container_id));
}

#[tokio::test]
async fn a_volume_holds_its_declared_size_and_no_more_and_keeps_data_until_the_workload_goes() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let mut s = spec(
        "w-vol",
        "cat /data/keep 2>/dev/null && echo FOUND_KEEP; \
         dd if=/dev/zero of=/data/fill bs=1048576 count=32 2>&1; \
         echo FILL_BYTES=$(wc -c < /data/fill); rm -f /data/fill; \
         echo kept > /data/keep; echo READY; exec sleep 3600",
    );
    s.volumes = vec![data_volume()]; // 8 MiB
    let first = node.run(&s).await;
    let text = wait_log(&first, "READY").await;
    assert!(text.contains("No space left on device"), "{text}");
    let filled: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("FILL_BYTES="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no FILL_BYTES in\n{text}"));
    assert!(
        filled > (4 << 20) && filled <= (8 << 20),
        "wrote {filled} bytes into an 8 MiB volume"
    );
    assert!(!text.contains("FOUND_KEEP"), "{text}");

    // The filesystem is mounted on the host where the runtime says.
    let host = VolumeHost::new(volumes_dir(), 0);
    let mnt = host.mount_path(&node.id, "w-vol", "data");
    assert!(is_mount_point(&mnt), "{} is not mounted", mnt.display());
    assert_eq!(
        std::fs::metadata(host.image_path(&node.id, "w-vol", "data"))
            .unwrap()
            .len(),
        8 << 20
    );

    // A replaced container (spec change) finds the data.
    let o = observed(&node, &first).await;
    node.rt.remove(&node.id, &o, false).await.unwrap();
    let second = node.run(&s).await;
    let text = wait_log(&second, "READY").await;
    assert!(text.contains("FOUND_KEEP"), "{text}");

    // The workload leaving takes its volume with it.
    let o = observed(&node, &second).await;
    node.rt.remove(&node.id, &o, true).await.unwrap();
    assert!(!is_mount_point(&mnt));
    assert!(!host.image_path(&node.id, "w-vol", "data").exists());
}

#[tokio::test]
async fn the_disk_floor_refuses_new_volumes_and_pulls_with_the_figures() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let mut opts = node.rt.options().clone();
    opts.volumes = VolumeHost::new(volumes_dir(), u64::MAX / 4);
    let rt = DockerRuntime::new(opts);
    let mut s = spec("w-floor", "sleep 3600");
    s.volumes = vec![data_volume()];
    let err = rt
        .create(&node.id, &s, "h", &node.cgroup_parent)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Container { reason, .. } if reason.contains("floor")),
        "{err}"
    );
    assert!(rt.list_owned(&node.id).await.unwrap().is_empty());
    // A pull (of an image this engine does not have) is refused the same way.
    let err = rt
        .ensure_image("127.0.0.1:5000/lattice/not-here:floor")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::ImageMissing { reason, .. } if reason.contains("floor")),
        "{err}"
    );
}

#[tokio::test]
async fn a_volume_whose_size_changed_is_refused_not_resized_behind_the_data() {
    let Some(env) = env().await else { return };
    let node = Node::new(&env).await;
    let mut s = spec("w-resize", "sleep 3600");
    s.volumes = vec![data_volume()];
    let id = node.create(&s).await.unwrap();
    let o = observed(&node, &id).await;
    node.rt.remove(&node.id, &o, false).await.unwrap();
    s.volumes[0].size_bytes = 16 << 20;
    let err = node.create(&s).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Rejected { reason, .. } if reason.contains("resizing")),
        "{err}"
    );
}
