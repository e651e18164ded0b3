//! `kwg completion` and `kwg man`: what a shell and `man` make of them.

use std::process::Command;

const KWG: &str = env!("CARGO_BIN_EXE_kwg");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn bash_completion_registers_kwg_and_completes_its_commands() {
    let script = format!(
        r#"source <({KWG} completion bash) && complete -p kwg && COMP_WORDS=(kwg ver); COMP_CWORD=1; _kwg kwg ver kwg && echo "${{COMPREPLY[@]}}""#
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(
        s.contains("complete -o bashdefault -o default -o nosort -F _kwg kwg"),
        "{s}"
    );
    assert_eq!(s.lines().last(), Some("version"), "{s}");
}

#[test]
fn zsh_and_fish_scripts_name_the_commands() {
    for (shell, want) in [("zsh", "#compdef kwg"), ("fish", "complete -c kwg")] {
        let out = Command::new(KWG)
            .args(["completion", shell])
            .output()
            .unwrap();
        let s = text(&out.stdout);
        assert!(out.status.success() && s.contains(want), "{shell}: {s}");
        assert!(s.contains("join") && s.contains("leave"), "{shell}");
    }
    let bad = Command::new(KWG)
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("possible values: bash"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn man_pages_render_for_kwg_and_each_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(KWG)
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    for page in ["kwg.1", "kwg-join.1", "kwg-version.1", "kwg-completion.1"] {
        assert!(dir.path().join(page).is_file(), "{page} missing");
    }
    // Hidden commands get no page.
    assert!(!dir.path().join("kwg-daemon.1").exists());
    assert!(!dir.path().join("kwg-man.1").exists());
    let page = Command::new("man")
        .env("MANWIDTH", "100")
        .arg("-l")
        .arg(dir.path().join("kwg-join.1"))
        .output()
        .unwrap();
    let s = text(&page.stdout);
    assert!(
        s.contains("NAME") && s.contains("kwg-join - Join the cluster"),
        "{s}"
    );
    assert!(s.contains("--namespace"), "{s}");
    let top = std::fs::read_to_string(dir.path().join("kwg.1")).unwrap();
    assert!(top.contains(env!("CARGO_PKG_VERSION")), "{top}");
}

#[test]
fn version_flag_names_the_release_and_commit() {
    let out = Command::new(KWG).arg("--version").output().unwrap();
    let s = text(&out.stdout);
    assert!(
        s.starts_with(&format!("kwg {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{s}"
    );
    let out = Command::new(KWG)
        .args(["version", "--client", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v.get("gateway").is_none(), "{v}");
}
