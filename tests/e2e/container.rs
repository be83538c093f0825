//! The container recipe: the `Dockerfile` builds the binary with the
//! README's own build line (`./scripts/test` compiles what that line
//! builds, with `cargo check`), in a
//! multi-stage build whose runtime image has no shell and runs as an
//! unprivileged user.

const DOCKERFILE: &str = include_str!("../../Dockerfile");
const README: &str = include_str!("../../README.md");

/// The Dockerfile's one `RUN cargo build …` line, without `RUN `.
fn build_line() -> &'static str {
    let lines: Vec<&str> = DOCKERFILE
        .lines()
        .filter_map(|l| l.strip_prefix("RUN "))
        .filter(|l| l.starts_with("cargo build "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one `RUN cargo build` line in the Dockerfile"
    );
    lines[0].trim()
}

#[test]
fn the_dockerfile_builds_with_the_readmes_build_line() {
    let line = build_line();
    assert!(
        README.lines().any(|l| l.trim() == line),
        "the README shows the Dockerfile's build line `{line}`"
    );
    for part in [
        "--release",
        "--locked",
        "-p qdn-relay-cli",
        "--features dynamo",
    ] {
        assert!(line.contains(part), "`{line}` has {part}");
    }
    assert!(
        DOCKERFILE.contains("COPY --from=build /src/target/release/qdn-relay "),
        "the runtime stage takes the binary that line builds"
    );
}

#[test]
fn the_container_is_multi_stage_shell_free_and_not_root() {
    let froms: Vec<&str> = DOCKERFILE
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(froms[0].ends_with(" AS build"), "{froms:?}");
    let runtime = froms[1];
    assert!(
        runtime.contains("distroless") || runtime.contains("scratch"),
        "a distroless or static runtime: {runtime}"
    );
    let users: Vec<&str> = DOCKERFILE
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .collect();
    assert_eq!(users.len(), 1, "{users:?}");
    assert!(
        !users[0].starts_with("root") && !users[0].starts_with('0'),
        "runs unprivileged: {users:?}"
    );
}
