//! What a tagged release publishes, checked on this tree: the workflow and action files pass
//! the GitHub schemas, the gateway's Dockerfile passes hadolint, the release manifests pin the
//! image by version, and the .deb built from target/debug installs kwg with its man page and
//! completions and removes cleanly. The checkers and cargo-deb come from
//! scripts/install-release-tools.sh (a cache under /var/cache/kwg-test).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The tools directory (installed once per test binary).
fn tools() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/install-release-tools.sh"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/install-release-tools.sh: {}",
            text(&out.stderr)
        );
        PathBuf::from(text(&out.stdout).trim())
    })
}

/// Runs a tool of the tools directory (PATH and PYTHONPATH set) in the repository root.
fn tool(argv: &[&str]) -> Output {
    let t = tools();
    let path = format!(
        "{}:{}:{}",
        t.join("bin").display(),
        t.join("python/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(root())
        .env("PATH", path)
        .env("PYTHONPATH", t.join("python"))
        .env("KWG_RELEASE_FAST", "1")
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("kwg-release-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn workspace_version() -> String {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = toml.lines().find(|l| l.starts_with("version = ")).unwrap();
    line.trim_start_matches("version = ")
        .trim_matches('"')
        .into()
}

#[test]
fn workflows_and_the_action_pass_the_github_schemas() {
    let wf = root().join(".github/workflows");
    let mut files: Vec<String> = std::fs::read_dir(&wf)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("release.yml")),
        "{files:?}"
    );
    assert!(files.iter().any(|f| f.ends_with("ci.yml")), "{files:?}");
    let mut argv = vec![
        "check-jsonschema",
        "--builtin-schema",
        "vendor.github-workflows",
    ];
    argv.extend(files.iter().map(String::as_str));
    let out = tool(&argv);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = tool(&[
        "check-jsonschema",
        "--builtin-schema",
        "vendor.github-actions",
        "action.yml",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // The checker does refuse a broken workflow (a job without runs-on, a misspelt key).
    let s = Scratch::new("wf");
    let bad = s.0.join("bad.yml");
    std::fs::write(
        &bad,
        "on: push\njobs:\n  t:\n    step:\n      - run: true\n",
    )
    .unwrap();
    let out = tool(&[
        "check-jsonschema",
        "--builtin-schema",
        "vendor.github-workflows",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", text(&out.stdout));

    // The release workflow publishes what README "Install" names.
    let release = std::fs::read_to_string(wf.join("release.yml")).unwrap();
    for want in [
        "tags: [\"v*.*.*\"]",
        "ubuntu-24.04-arm",
        "linux/amd64,linux/arm64",
        "ghcr.io/",
        "scripts/release-build.sh",
        "scripts/release-manifests.sh",
        "SHA256SUMS",
    ] {
        assert!(release.contains(want), "release.yml lacks {want}");
    }
    let ci = std::fs::read_to_string(wf.join("ci.yml")).unwrap();
    assert!(ci.contains("bash scripts/test.sh"), "{ci}");
}

#[test]
fn the_gateway_dockerfile_passes_hadolint() {
    let out = tool(&["hadolint", "gateway/Dockerfile"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let df = std::fs::read_to_string(root().join("gateway/Dockerfile")).unwrap();
    for want in [
        "org.opencontainers.image.version=\"${VERSION}\"",
        "org.opencontainers.image.source=\"${SOURCE}\"",
        "nftables",
        "USER 65532:65532",
        "COPY dist/linux-${TARGETARCH}/kwg-gateway",
    ] {
        assert!(df.contains(want), "gateway/Dockerfile lacks {want}");
    }
    // The linter does refuse a bad one (an unpinned base image, root, apt lists kept).
    let s = Scratch::new("df");
    let bad = s.0.join("Dockerfile");
    std::fs::write(&bad, "FROM debian\nRUN apt-get install nftables\n").unwrap();
    let out = tool(&["hadolint", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("DL3006"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_release_manifests_pin_the_gateway_image_by_version() {
    let s = Scratch::new("manifests");
    let v = workspace_version();
    let out = tool(&[
        "bash",
        "scripts/release-manifests.sh",
        &v,
        "ghcr.io/example/kwg-gateway",
        s.0.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tgz = s.0.join(format!("kwg-manifests_{v}.tar.gz"));
    let x = Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&s.0)
        .status()
        .unwrap();
    assert!(x.success());
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(s.0.join("kwg-manifests"))
        .output()
        .unwrap();
    let yaml = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        yaml.contains(&format!("image: ghcr.io/example/kwg-gateway:{v}")),
        "{yaml}"
    );
    assert!(!yaml.contains("kwg-gateway:dev"), "{yaml}");
    // A tag in IMAGE is refused (the version is the tag).
    let out = tool(&[
        "bash",
        "scripts/release-manifests.sh",
        &v,
        "ghcr.io/example/kwg-gateway:latest",
        s.0.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_deb_installs_kwg_kwg_helper_its_man_page_and_completions_and_removes_cleanly() {
    let s = Scratch::new("deb");
    let v = workspace_version();
    let bins = kwg_sim::bin_dir();
    let dist = s.0.join("dist");
    // arm64 too, from the same binary: the action's install test picks by architecture (the
    // arm64 run writes the amd64 .deb again: cargo-deb names the host's architecture).
    for arch in ["arm64", "amd64"] {
        let out = tool(&[
            "bash",
            "scripts/release-build.sh",
            &v,
            arch,
            dist.to_str().unwrap(),
            bins.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "release-build.sh {arch}: {}",
            text(&out.stderr)
        );
    }
    let deb = dist.join(format!("kwg_{v}-1_amd64.deb"));
    let tgz = dist.join(format!("kwg_{v}_linux_amd64.tar.gz"));
    assert!(deb.is_file() && tgz.is_file(), "{}", dist.display());
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(
        sums.contains(&format!("  kwg_{v}_linux_amd64.tar.gz")),
        "{sums}"
    );
    let check = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&dist)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stdout));
    assert!(dist.join("linux-amd64/kwg-gateway").is_file());

    // The GitHub action's install step against a local server of these assets.
    let node = Command::new("node")
        .arg("--test")
        .arg(root().join("ci/action/install.test.js"))
        .env("KWG_RELEASE_DIR", &dist)
        .output()
        .unwrap();
    assert!(
        node.status.success(),
        "ci/action/install.test.js: {}{}",
        text(&node.stdout),
        text(&node.stderr)
    );

    // The archive: kwg, kwg-helper, man pages, completions.
    let list = Command::new("tar").arg("-tzf").arg(&tgz).output().unwrap();
    let list = text(&list.stdout);
    for want in [
        "/kwg\n",
        "/kwg-helper\n",
        "/man/kwg.1.gz",
        "/man/kwg-join.1.gz",
        "/completions/kwg.bash",
    ] {
        assert!(list.contains(want), "{want} not in the archive:\n{list}");
    }

    // dpkg into a throwaway root (this machine's own packages are left alone): the package's
    // dependencies are this machine's libc, checked against its dpkg database.
    let depends = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .arg("Depends")
        .output()
        .unwrap();
    let depends = text(&depends.stdout);
    assert!(depends.contains("libc6"), "{depends}");
    let root = s.0.join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-depends", "--force-script-chrootless"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dpkg {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };
    dpkg(&["-i", deb.to_str().unwrap()]);
    let kwg = root.join("usr/bin/kwg");
    let version = Command::new(&kwg).arg("--version").output().unwrap();
    assert!(
        text(&version.stdout).starts_with(&format!("kwg {v} (commit ")),
        "{}",
        text(&version.stdout)
    );
    // The root helper of a join by a normal user, next to kwg (where kwg looks first).
    let helper = root.join("usr/bin/kwg-helper");
    let version = Command::new(&helper).arg("--version").output().unwrap();
    assert_eq!(text(&version.stdout).trim(), format!("kwg-helper {v}"));
    let man = Command::new("man")
        .env("MANPATH", root.join("usr/share/man"))
        .env("MANWIDTH", "100")
        .args(["kwg"])
        .output()
        .unwrap();
    assert!(
        text(&man.stdout).contains("kwg - Join this machine to a Kubernetes cluster"),
        "man kwg: {}{}",
        text(&man.stdout),
        text(&man.stderr)
    );
    let completion = root.join("usr/share/bash-completion/completions/kwg");
    let complete = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p kwg",
            completion.display()
        ))
        .output()
        .unwrap();
    assert!(
        text(&complete.stdout).contains("-F _kwg kwg"),
        "{}",
        text(&complete.stderr)
    );
    for f in [
        "usr/share/zsh/vendor-completions/_kwg",
        "usr/share/fish/vendor_completions.d/kwg.fish",
        "usr/share/man/man1/kwg-version.1.gz",
    ] {
        assert!(root.join(f).is_file(), "{f} not installed");
    }

    dpkg(&["--purge", "kwg"]);
    assert!(!kwg.exists(), "kwg left after dpkg --purge");
    assert!(!helper.exists(), "kwg-helper left after dpkg --purge");
    assert!(!completion.exists(), "completion left after dpkg --purge");
    assert!(
        !root.join("usr/share/man/man1/kwg.1.gz").exists(),
        "man page left after dpkg --purge"
    );
}
