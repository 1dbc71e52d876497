//! `loadtest`: parses the command line and hands it to the library.

brine_common::global_allocator!();

use clap::Parser;

fn main() {
    let cli = match brine_loadtest::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                brine_common::exit::USAGE
            } else {
                brine_common::exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(brine_loadtest::cli::run(cli));
}
