use clap::Parser;

fn main() {
    let cli = match kwg::args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    kwg::init_tracing(matches!(cli.command, kwg::args::Command::Daemon(_)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match rt.block_on(kwg::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Messages quote cluster text (names, annotations): never printed raw. A closed
            // terminal must not turn the exit code into a panic's.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "kwg: {}",
                kwg::output::sanitize_lines(&e.to_string())
            );
            kwg::exit::ExitCode::from(&e).code()
        }
    };
    std::process::exit(code);
}

/// clap's message and code 2; with `-o json` also the failure object on stdout.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .windows(2)
        .any(|w| matches!(w[0].as_str(), "-o" | "--output") && w[1] == "json")
        || args.iter().any(|a| a == "-ojson" || a == "--output=json");
    let help = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    if json && !help {
        let code = kwg::exit::ExitCode::Usage;
        let first = e.to_string();
        let message = first.lines().next().unwrap_or_default();
        let failure = kwg::exit::Failure {
            connected: false,
            step: code.step().into(),
            message: message.trim_start_matches("error: ").into(),
            exit_code: code,
        };
        println!("{}", serde_json::to_string(&failure).expect("serializes"));
    }
    e.exit()
}
