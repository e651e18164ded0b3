use clap::Parser;

fn main() {
    let cli = kwg::args::Cli::parse();
    kwg_wg::logging::init("warn");
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
