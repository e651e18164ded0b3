//! `kwg version`: this client's release and commit, the gateway's release and contract
//! version read from the cluster, and whether the two are within the supported skew
//! (docs/contract.md, "Versions and skew"). Also `kwg completion` and the man pages, generated
//! from the same clap definitions as `--help`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use kwg_contract::{PROTOCOL_VERSION, PublishedVersions};
use serde::Serialize;

use crate::args::{Cli, Format, KubeArgs, text_or_json};
use crate::cluster::Kube;
use crate::error::Error;

/// This client's release (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this client was built from (`unknown` outside a checkout; build.rs).
pub const COMMIT: &str = env!("KWG_GIT_COMMIT");
/// `kwg --version`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KWG_GIT_COMMIT"),
    ")"
);
/// The oldest contract version this client speaks ([`PROTOCOL_VERSION`] is the newest).
pub const MIN_CONTRACT_VERSION: u32 = PROTOCOL_VERSION;

#[derive(Debug, Args)]
pub struct VersionArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Only this client's version; the cluster is not contacted.
    #[arg(long)]
    pub client: bool,
    /// text or json.
    #[arg(short, long, default_value = "text", value_parser = text_or_json())]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash (`source <(kwg completion bash)`), zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write kwg.1 and a kwg-COMMAND.1 per command into (created).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// A release version `MAJOR.MINOR.PATCH` (a pre-release or build suffix is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub major: u64,
    pub minor: u64,
}

impl Release {
    pub fn parse(s: &str) -> Option<Release> {
        let core = s.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let (major, minor, _patch) = (parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(Release { major, minor })
    }
}

/// Where a gateway stands against this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skew {
    /// Same contract, releases at most one minor version apart.
    Supported,
    /// The gateway speaks a contract older than this client understands: join refuses it.
    ContractOlder { gateway: u32 },
    /// The gateway speaks a newer contract: join refuses it.
    ContractNewer {
        gateway: u32,
        release: Option<String>,
    },
    /// Same contract, but the gateway's release is more than one minor version older.
    ReleaseOlder { gateway: String },
    /// Same contract, but the gateway's release is more than one minor version newer.
    ReleaseNewer { gateway: String },
    /// The gateway publishes no release (older than the field) or one that is not
    /// `MAJOR.MINOR.PATCH`: the release skew cannot be checked.
    ReleaseUnknown { gateway: Option<String> },
}

/// The skew policy: the contract version decides whether join works at all; within it, a
/// client supports gateways one minor version older or newer of the same major.
pub fn skew(client: &str, gateway: &PublishedVersions) -> Skew {
    if gateway.version < MIN_CONTRACT_VERSION {
        return Skew::ContractOlder {
            gateway: gateway.version,
        };
    }
    if gateway.version > PROTOCOL_VERSION {
        return Skew::ContractNewer {
            gateway: gateway.version,
            release: gateway.gateway_version.clone(),
        };
    }
    let (Some(c), Some(g)) = (
        Release::parse(client),
        gateway.gateway_version.as_deref().and_then(Release::parse),
    ) else {
        return Skew::ReleaseUnknown {
            gateway: gateway.gateway_version.clone(),
        };
    };
    let (cm, gm) = (c.major * 1_000_000 + c.minor, g.major * 1_000_000 + g.minor);
    let gateway = gateway.gateway_version.clone().unwrap_or_default();
    if c.major != g.major || gm.abs_diff(cm) > 1 {
        if gm < cm {
            Skew::ReleaseOlder { gateway }
        } else {
            Skew::ReleaseNewer { gateway }
        }
    } else {
        Skew::Supported
    }
}

impl Skew {
    /// The warning a user reads, naming what to upgrade; `None` when supported.
    pub fn warning(&self, client: &str) -> Option<String> {
        let upgrade_gateway = format!(
            "upgrade the gateway to {client} (kubectl apply -k the manifests of release v{client}, README \"Install\")"
        );
        Some(match self {
            Skew::Supported => return None,
            Skew::ContractOlder { gateway } => format!(
                "the gateway speaks contract version {gateway}, older than the {MIN_CONTRACT_VERSION} this kwg needs, so kwg join will refuse it: {upgrade_gateway}"
            ),
            Skew::ContractNewer { gateway, release } => format!(
                "the gateway speaks contract version {gateway}, newer than the {PROTOCOL_VERSION} this kwg understands, so kwg join will refuse it: upgrade kwg to {}",
                release.as_deref().unwrap_or("the gateway's release")
            ),
            Skew::ReleaseOlder { gateway } => format!(
                "gateway {gateway} is more than one minor version older than kwg {client} (supported: one minor older or newer): {upgrade_gateway}"
            ),
            Skew::ReleaseNewer { gateway } => format!(
                "gateway {gateway} is more than one minor version newer than kwg {client} (supported: one minor older or newer): upgrade kwg to {gateway}"
            ),
            Skew::ReleaseUnknown { gateway: None } => format!(
                "the gateway does not publish its release (it predates the gatewayVersion field), so the skew is not checked: {upgrade_gateway}"
            ),
            Skew::ReleaseUnknown { gateway: Some(v) } => format!(
                "the gateway's release `{}` is not MAJOR.MINOR.PATCH, so the skew is not checked",
                crate::output::sanitize(v)
            ),
        })
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientVersion {
    version: &'static str,
    commit: &'static str,
    contract_version: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GatewayVersion {
    /// `null` for a gateway older than the field.
    version: Option<String>,
    contract_version: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    client: ClientVersion,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<GatewayVersion>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    /// Why the gateway could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `kwg version`: exit 0 also with a skew warning (printed on stderr, in `warnings` with
/// `-o json`); a cluster that cannot be read is the usual error after the client's lines.
pub async fn run(a: VersionArgs) -> Result<i32, Error> {
    let client = ClientVersion {
        version: VERSION,
        commit: COMMIT,
        contract_version: PROTOCOL_VERSION,
    };
    let gateway = if a.client {
        None
    } else {
        Some(read_gateway(&a.kube).await)
    };
    let mut report = Report {
        client,
        gateway: None,
        warnings: vec![],
        error: None,
    };
    let mut failure = None;
    match gateway {
        None => {}
        Some(Ok(v)) => {
            report.warnings.extend(skew(VERSION, &v).warning(VERSION));
            report.gateway = Some(GatewayVersion {
                version: v.gateway_version,
                contract_version: v.version,
            });
        }
        Some(Err(e)) => {
            report.error = Some(e.to_string());
            failure = Some(e);
        }
    }
    let mut out = std::io::stdout().lock();
    if a.output == Format::Json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).expect("serializes")
        );
    } else {
        let _ = write!(out, "{}", text(&report));
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(0),
    }
}

fn text(r: &Report) -> String {
    let mut s = format!(
        "Client Version: {}\nClient Commit: {}\nClient Contract: {}\n",
        r.client.version, r.client.commit, r.client.contract_version
    );
    if let Some(g) = &r.gateway {
        let v = g
            .version
            .as_deref()
            .map(crate::output::sanitize)
            .unwrap_or_else(|| "unknown (not published)".into());
        s += &format!(
            "Gateway Version: {v}\nGateway Contract: {}\n",
            g.contract_version
        );
    }
    s
}

async fn read_gateway(k: &KubeArgs) -> Result<PublishedVersions, Error> {
    let kube = Kube::connect(k.kubeconfig.as_deref(), k.context.as_deref()).await?;
    let json = kube.gateway_info_json(&k.kwg_namespace).await?;
    Ok(PublishedVersions::from_json(json.as_bytes())?)
}

/// `kwg completion SHELL`: the completion script on stdout.
pub fn completion(a: &CompletionArgs) {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "kwg", &mut std::io::stdout());
}

/// `kwg man --dir DIR`: kwg.1 and kwg-COMMAND.1 for each command shown in `--help`.
pub fn man(a: &ManArgs) -> Result<(), Error> {
    let io = |p: &Path, e: std::io::Error| Error::io(format!("write {}", p.display()), e);
    std::fs::create_dir_all(&a.dir).map_err(|e| io(&a.dir, e))?;
    let cmd = Cli::command().version(VERSION);
    let mut pages = vec![("kwg".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("kwg-{}", sub.get_name());
        // clap names are 'static (without its `string` feature); this runs once per process.
        let page_name: &'static str = Box::leak(name.clone().into_boxed_str());
        pages.push((name, sub.clone().name(page_name).version(VERSION)));
    }
    for (name, page) in pages {
        let path = a.dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut buf)
            .map_err(|e| io(&path, e))?;
        std::fs::write(&path, buf).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(contract: u32, release: Option<&str>) -> PublishedVersions {
        PublishedVersions {
            version: contract,
            gateway_version: release.map(str::to_string),
        }
    }

    #[test]
    fn same_and_adjacent_releases_are_supported() {
        for g in ["0.4.0", "0.4.7", "0.3.9", "0.5.0", "0.5.0-rc.1", "v0.4.1"] {
            assert_eq!(skew("0.4.2", &gw(1, Some(g))), Skew::Supported, "{g}");
        }
        assert_eq!(skew("1.0.0", &gw(1, Some("1.1.3"))), Skew::Supported);
        assert_eq!(Skew::Supported.warning("0.4.2"), None);
    }

    #[test]
    fn releases_two_minors_apart_or_another_major_warn() {
        let older = skew("0.4.2", &gw(1, Some("0.2.0")));
        assert_eq!(
            older,
            Skew::ReleaseOlder {
                gateway: "0.2.0".into()
            }
        );
        let w = older.warning("0.4.2").unwrap();
        assert!(w.contains("upgrade the gateway to 0.4.2"), "{w}");
        let newer = skew("0.4.2", &gw(1, Some("0.6.1")));
        assert!(
            newer
                .warning("0.4.2")
                .unwrap()
                .ends_with("upgrade kwg to 0.6.1")
        );
        assert!(matches!(
            skew("1.0.0", &gw(1, Some("2.0.0"))),
            Skew::ReleaseNewer { .. }
        ));
        assert!(matches!(
            skew("1.0.0", &gw(1, Some("0.9.0"))),
            Skew::ReleaseOlder { .. }
        ));
    }

    #[test]
    fn the_contract_decides_first() {
        // A newer contract: join refuses it whatever the releases say.
        let s = skew("0.4.2", &gw(PROTOCOL_VERSION + 1, Some("0.5.0")));
        let w = s.warning("0.4.2").unwrap();
        assert!(w.contains("newer than the 1 this kwg understands"), "{w}");
        assert!(w.ends_with("upgrade kwg to 0.5.0"), "{w}");
        let s = skew("0.4.2", &gw(MIN_CONTRACT_VERSION - 1, None));
        assert_eq!(s, Skew::ContractOlder { gateway: 0 });
        assert!(
            s.warning("0.4.2")
                .unwrap()
                .contains("kwg join will refuse it")
        );
    }

    #[test]
    fn an_unpublished_or_odd_release_is_not_checked() {
        let s = skew("0.4.2", &gw(1, None));
        let w = s.warning("0.4.2").unwrap();
        assert!(w.contains("does not publish its release"), "{w}");
        let s = skew("0.4.2", &gw(1, Some("dev\nX")));
        let w = s.warning("0.4.2").unwrap();
        assert!(
            w.contains("not MAJOR.MINOR.PATCH") && !w.contains('\n'),
            "{w}"
        );
    }

    #[test]
    fn release_parsing() {
        assert_eq!(
            Release::parse("1.22.3-beta.1+abc"),
            Some(Release {
                major: 1,
                minor: 22
            })
        );
        for bad in ["", "1", "1.2", "1.2.3.4", "a.b.c", "dev"] {
            assert_eq!(Release::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_workspace_version_parses() {
        assert!(Release::parse(VERSION).is_some());
        assert!(!COMMIT.is_empty());
    }
}
