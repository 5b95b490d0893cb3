use super::engine::{classify, split_reference, Failure};
use super::*;

#[test]
fn references_split_into_name_and_tag_or_digest() {
    assert_eq!(
        split_reference("127.0.0.1:5000/lattice/busybox@sha256:ab"),
        ("127.0.0.1:5000/lattice/busybox", "sha256:ab")
    );
    assert_eq!(
        split_reference("127.0.0.1:5000/lattice/busybox:test"),
        ("127.0.0.1:5000/lattice/busybox", "test")
    );
    assert_eq!(
        split_reference("127.0.0.1:5000/busybox"),
        ("127.0.0.1:5000/busybox", "latest")
    );
    assert_eq!(split_reference("busybox"), ("busybox", "latest"));
}

#[test]
fn unreachable_engine_errors_are_unavailable() {
    assert!(matches!(
        classify(BollardError::SocketNotFoundError("/x".into())),
        Failure::Unreachable(_)
    ));
    assert!(matches!(
        classify(BollardError::RequestTimeoutError),
        Failure::Unreachable(_)
    ));
    assert!(matches!(
        classify(BollardError::DockerResponseServerError {
            status_code: 404,
            message: "no".into()
        }),
        Failure::Status(404, _)
    ));
}

#[tokio::test]
async fn a_missing_socket_is_unavailable_not_a_panic() {
    let rt = DockerRuntime::new(DockerOptions {
        socket: "/nonexistent/docker.sock".into(),
        ..Default::default()
    });
    let err = rt.list_owned("n").await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Unavailable(m) if m.contains("/nonexistent/docker.sock")),
        "{err:?}"
    );
}
