use clap::Parser;

fn main() {
    let cli = kwg::args::Cli::parse();
    let json_logs = std::env::var("KWG_LOG_FORMAT").is_ok_and(|v| v == "json");
    let filter = tracing_subscriber::EnvFilter::try_from_env("KWG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json_logs {
        builder.json().init();
    } else {
        builder.init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match rt.block_on(kwg::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kwg: {e}");
            1
        }
    };
    std::process::exit(code);
}
