//! `kwg doctor`: one line per check of the machine, the cluster and the tunnel, each naming
//! the fix when it fails; `--bundle` writes a redacted tar.gz for a bug report.

use std::path::PathBuf;

pub mod bundle;
pub mod check;
pub mod cluster;
mod gather;
pub mod local;
mod probe;
pub mod redact;

use crate::args::{Format, KubeArgs};
use crate::error::Error;
use crate::state::StateDir;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Output: one line per check, or one JSON object.
    #[arg(short, long, default_value = "text", value_parser = crate::args::text_or_json())]
    pub output: Format,
    /// Also write a tar.gz of versions, status, logs and the checks (keys, tokens and
    /// certificates redacted) to FILE (a new file, mode 0600; an existing one is refused), for a
    /// bug report.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
}

/// Runs every check; the exit code is that of the first failed check (0 when all pass).
pub async fn run(args: DoctorArgs, dir: StateDir) -> Result<i32, Error> {
    let findings = gather::gather(&args, &dir).await;
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&check::json(&findings.checks)).expect("serializes")
        ),
        _ => print!("{}", check::text(&findings.checks)),
    }
    if let Some(path) = &args.bundle {
        bundle::write(path, &bundle::contents(&findings, &dir))?;
        if args.output != Format::Json {
            println!(
                "Wrote {} (keys, tokens and certificates redacted).",
                path.display()
            );
        }
    }
    Ok(check::exit_code(&findings.checks))
}
