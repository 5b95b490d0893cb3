use super::*;
use lattice_wire::msg::{RestartPolicy, WorkloadClass};

const IMAGE: &str = "127.0.0.1:5000/lattice/busybox@sha256:1";

fn spec(id: &str) -> WorkloadSpec {
    WorkloadSpec {
        id: id.into(),
        name: id.into(),
        image: IMAGE.into(),
        command: vec![],
        env: vec![],
        volumes: vec![],
        cpu_millis: 100,
        memory_bytes: 64 << 20,
        pids_max: 64,
        health: None,
        restart: RestartPolicy::Always,
        class: WorkloadClass::Batch,
        egress: false,
        capabilities: vec![],
        ports: vec![],
        upstreams: Vec::new(),
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn lifecycle_is_recorded_and_reflected() {
    block(async {
        let rt = FakeRuntime::new();
        rt.ensure_image(IMAGE).await.unwrap();
        let id = rt.create("n", &spec("w-1"), "h1", "/p").await.unwrap();
        let seen = rt.list_owned("n").await.unwrap();
        assert_eq!(seen[0].status, ContainerStatus::Created);
        assert_eq!(seen[0].started_at, NEVER_STARTED);
        rt.start(&id).await.unwrap();
        let started = rt.container(&id).unwrap().started_at;
        rt.start(&id).await.unwrap();
        assert_eq!(
            rt.container(&id).unwrap().started_at,
            started,
            "no-op start"
        );
        rt.set_health(&id, Health::Healthy);
        rt.pause(&id).await.unwrap();
        rt.pause(&id).await.unwrap();
        assert!(rt.start(&id).await.is_err(), "start of a paused container");
        assert_eq!(
            rt.list_owned("n").await.unwrap()[0].status,
            ContainerStatus::Paused
        );
        rt.unpause(&id).await.unwrap();
        rt.stop(&id).await.unwrap();
        assert!(rt.pause(&id).await.is_err(), "pause of a stopped container");
        rt.start(&id).await.unwrap();
        assert!(
            rt.container(&id).unwrap().started_at > started,
            "restart moves the clock"
        );
        let obs = rt.container(&id).unwrap().observed();
        rt.remove("n", &obs, true).await.unwrap();
        rt.remove("n", &obs, true).await.unwrap();
        assert!(rt.containers().is_empty());
        let kinds: Vec<CallKind> = rt.take_calls().iter().map(Call::kind).collect();
        use CallKind::*;
        assert_eq!(
            kinds,
            [
                EnsureImage,
                Create,
                ListOwned,
                Start,
                Start,
                Pause,
                Pause,
                Start,
                ListOwned,
                Unpause,
                Stop,
                Pause,
                Start,
                Remove,
                Remove
            ]
        );
        assert!(rt.calls().is_empty());
    });
}

#[test]
fn injected_failures_hit_the_next_call_of_their_kind_only() {
    block(async {
        let rt = FakeRuntime::new();
        rt.add_image(IMAGE);
        let id = rt.create("n", &spec("w-1"), "h", "/p").await.unwrap();
        rt.fail_next(CallKind::Start, RuntimeError::Unavailable("a".into()));
        rt.fail_next(CallKind::Start, RuntimeError::Unavailable("b".into()));
        rt.list_owned("n").await.unwrap();
        assert_eq!(
            rt.start(&id).await,
            Err(RuntimeError::Unavailable("a".into()))
        );
        assert_eq!(
            rt.start(&id).await,
            Err(RuntimeError::Unavailable("b".into()))
        );
        rt.start(&id).await.unwrap();
        assert_eq!(rt.count(CallKind::Start), 3);
        assert_eq!(
            rt.calls_of(CallKind::Start)[0],
            Call::Start {
                container_id: id.clone()
            }
        );

        rt.set_unavailable(Some("engine stopped"));
        assert!(matches!(
            rt.list_owned("n").await,
            Err(RuntimeError::Unavailable(_))
        ));
        assert!(matches!(
            rt.stop(&id).await,
            Err(RuntimeError::Unavailable(_))
        ));
        rt.set_unavailable(None);
        assert!(matches!(
            rt.list_owned("n").await.unwrap()[0].status,
            ContainerStatus::Running { .. }
        ));
    });
}

#[test]
fn images_must_be_had_before_create() {
    block(async {
        let rt = FakeRuntime::new();
        assert!(matches!(
            rt.create("n", &spec("w-1"), "h", "/p").await,
            Err(RuntimeError::ImageMissing { .. })
        ));
        rt.set_image_missing(IMAGE, "manifest unknown");
        assert_eq!(
            rt.ensure_image(IMAGE).await,
            Err(RuntimeError::ImageMissing {
                image: IMAGE.into(),
                reason: "manifest unknown".into()
            })
        );
        rt.add_image(IMAGE);
        rt.ensure_image(IMAGE).await.unwrap();
        rt.create("n", &spec("w-1"), "h", "/p").await.unwrap();
    });
}

#[test]
fn specs_are_checked_like_the_real_runtime() {
    block(async {
        let rt = FakeRuntime::new();
        rt.add_image(IMAGE);
        let mut s = spec("w-1");
        s.capabilities = vec!["SYS_ADMIN".into()];
        match rt.create("n", &s, "h", "/p").await {
            Err(RuntimeError::Rejected { reason, .. }) => assert!(reason.contains("SYS_ADMIN")),
            other => panic!("{other:?}"),
        }
        assert!(rt.containers().is_empty());
        rt.create("n", &spec("w-1"), "h", "/p").await.unwrap();
        assert!(matches!(
            rt.create("n", &spec("w-1"), "h", "/p").await,
            Err(RuntimeError::Container { .. })
        ));
    });
}

#[test]
fn nodes_see_and_remove_only_their_own() {
    block(async {
        let rt = FakeRuntime::new();
        let theirs = rt.add_container(
            "other",
            &spec("w-1"),
            "h",
            ContainerStatus::Running {
                health: Health::Unknown,
            },
        );
        let mine = rt.add_container("n", &spec("w-1"), "h", ContainerStatus::Paused);
        assert!(rt.calls().is_empty(), "seeding records no call");
        let seen = rt.list_owned("n").await.unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].container_id, mine);
        assert_ne!(seen[0].started_at, NEVER_STARTED);
        let theirs_obs = rt.container(&theirs).unwrap().observed();
        assert!(matches!(
            rt.remove("n", &theirs_obs, true).await,
            Err(RuntimeError::Rejected { .. })
        ));
        assert!(rt.container(&theirs).is_some());
        assert_eq!(rt.container_of("other", "w-1").unwrap().id, theirs);
    });
}

#[test]
fn the_test_plays_exits_and_oom_kills() {
    block(async {
        let rt = FakeRuntime::new();
        let id = rt.add_container("n", &spec("w-1"), "h", ContainerStatus::Created);
        rt.exit(&id, 3);
        assert_eq!(
            rt.list_owned("n").await.unwrap()[0].status,
            ContainerStatus::Exited {
                code: 3,
                oom_killed: false
            }
        );
        rt.oom_kill(&id);
        assert_eq!(
            rt.container(&id).unwrap().status,
            ContainerStatus::Exited {
                code: 137,
                oom_killed: true
            }
        );
    });
}

#[test]
#[should_panic(expected = "no container")]
fn scripting_an_unknown_container_panics_with_its_id() {
    FakeRuntime::new().exit("nope", 1);
}
